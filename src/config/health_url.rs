//! `health_url:`, parsed once when the config is loaded (its GET is `heal::verify`'s).

use serde::Serialize;

/// A plain-HTTP health URL (`http://host[:port]/path`), parsed once, when the config is
/// loaded; it serializes back to what the config said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct HealthUrl {
    pub raw: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl TryFrom<String> for HealthUrl {
    type Error = String;
    fn try_from(url: String) -> Result<HealthUrl, String> {
        HealthUrl::parse(&url).map_err(|err| format!("health_url: {err}"))
    }
}

impl Serialize for HealthUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl HealthUrl {
    /// Parses the URL; only `http://` is supported (health endpoints listen on loopback).
    pub(crate) fn parse(url: &str) -> Result<HealthUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        if authority.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} is not a valid URL"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse().map_err(|_| format!("{url:?}: bad port"))?;
                (host.to_owned(), port)
            }
            _ => (authority.to_owned(), 80),
        };
        Ok(HealthUrl {
            raw: url.to_owned(),
            host,
            port,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_health_urls() {
        let url = HealthUrl::parse("http://127.0.0.1:5002/health").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 5002, "/health")
        );
        let url = HealthUrl::parse("http://localhost").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        let url = HealthUrl::parse("http://[::1]:8080/x?y=1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("[::1]", 8080, "/x?y=1")
        );
        for bad in ["https://x/", "ftp://x", "http://", "http://h:notaport/"] {
            assert!(HealthUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
