//! The `email:` section of the config: transports, the SMTP relay, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;

/// Email delivery settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailConfig {
    /// Recipients; defaults to `[owner]`.
    #[serde(default)]
    pub to: Vec<String>,
    /// Sender address.
    pub from: Option<String>,
    /// How mail leaves the host.
    #[serde(default)]
    pub transport: Transport,
    /// SMTP relay settings, for `transport: smtp`.
    pub smtp: Option<SmtpConfig>,
    /// Where `transport: file` writes `.eml` files.
    pub file_dir: Option<PathBuf>,
}

/// The mail transports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transport {
    #[default]
    Smtp,
    Sendmail,
    File,
}

/// An SMTP relay.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpConfig {
    /// Relay host name.
    pub host: String,
    /// Relay port; defaults by `security` (587, 465, 25).
    pub port: Option<u16>,
    /// Transport security.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// AUTH user name.
    pub username: Option<String>,
    /// File holding the AUTH password (never inline in the YAML).
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate to trust (private relays).
    pub ca_file: Option<PathBuf>,
    /// Timeout of the whole SMTP conversation.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
    /// Allow AUTH over a connection without TLS (`security: none`): only for a relay on the
    /// same host, where the password never crosses a network.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
}

impl Transport {
    /// The config spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::Sendmail => "sendmail",
            Transport::File => "file",
        }
    }
}

impl SmtpConfig {
    /// The relay's port: `port`, else the one `security` implies (587, 465, 25).
    pub(crate) fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

fn default_smtp_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `user@host` (a display name and angle brackets around it allowed): a local part and a
/// domain, neither empty nor holding spaces. What SMTP would refuse later is refused here.
pub(crate) fn is_address(text: &str) -> bool {
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => text.trim(),
    };
    address.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !address.contains(char::is_whitespace)
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    })
}

/// Checks the `email:` section when the config is loaded. An error names the key (below
/// `email:`) it is about.
pub(crate) fn validate(
    email: &EmailConfig,
    owner: Option<&str>,
) -> Result<(), (&'static [&'static str], String)> {
    if email.to.is_empty() && owner.is_none() {
        return Err((&["to"], "no recipient: set `email.to` or `owner`".into()));
    }
    for address in email.to.iter().map(String::as_str).chain(owner) {
        if !is_address(address) {
            return Err((&["to"], format!("{address:?} is not an email address")));
        }
    }
    if let Some(from) = email.from.as_deref().filter(|from| !is_address(from)) {
        return Err((
            &["from"],
            format!(
                "{from:?} is not an email address (like selfheal@host.example): no report could be sent from it"
            ),
        ));
    }
    if let Some(smtp) = &email.smtp {
        let credentials = smtp.username.is_some() || smtp.password_file.is_some();
        if smtp.security == SmtpSecurity::None && credentials && !smtp.allow_plaintext_auth {
            return Err((
                &["smtp", "security"],
                format!(
                    "smtp: security: none would send the password for {} in clear text; use security: starttls or tls, or set allow_plaintext_auth: true for a relay on this host",
                    smtp.username.as_deref().unwrap_or("the login")
                ),
            ));
        }
    }
    match email.transport {
        Transport::Smtp if email.smtp.is_none() => Err((
            &["transport"],
            "transport smtp needs `smtp: { host: ... }`".into(),
        )),
        Transport::File if email.file_dir.is_none() => {
            Err((&["transport"], "transport file needs `file_dir`".into()))
        }
        _ => Ok(()),
    }
}
