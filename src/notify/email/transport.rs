//! How a stored message leaves the host: SMTP (STARTTLS, implicit TLS or plain, with AUTH),
//! the local `sendmail`, or `.eml` files in a directory.
//!
//! The SMTP password comes from a systemd credential (`$CREDENTIALS_DIRECTORY/smtp-password`,
//! for `LoadCredential=`) or from `password_file`, which must be owned by the user selfheal runs
//! as and unreadable by group and others. It is never part of any message or error text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, SendmailTransport, SmtpTransport, Transport as _};

use super::compose::Envelope;
use super::{EmailConfig, SmtpConfig, SmtpSecurity, Transport};

/// The name of the systemd credential holding the SMTP password.
pub(super) const PASSWORD_CREDENTIAL: &str = "smtp-password";

/// A delivery problem, phrased for the person who has to fix it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmailError {
    #[error("email is not configured (no `email:` section)")]
    NotConfigured,
    #[error("SMTP password: {0}")]
    Password(String),
    #[error("the SMTP server refused the login: {0}; check email.smtp.username and the password")]
    AuthRejected(String),
    #[error("SMTP delivery to {relay} failed: {message}")]
    Smtp { relay: String, message: String },
    #[error("the TLS handshake with {relay} failed: {advice} ({cause})")]
    Tls {
        relay: String,
        advice: &'static str,
        cause: String,
    },
    #[error("sendmail failed: {0}")]
    Sendmail(String),
    #[error("writing {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A configured transport.
pub(crate) enum Sender {
    Smtp {
        transport: SmtpTransport,
        relay: String,
    },
    Sendmail(SendmailTransport),
    File(PathBuf),
}

impl Sender {
    pub(crate) fn from_config(email: &EmailConfig) -> Result<Sender, EmailError> {
        match email.transport {
            Transport::Smtp => {
                let smtp = email.smtp.as_ref().ok_or(EmailError::Invalid(
                    "transport smtp needs `smtp: { host: ... }`".into(),
                ))?;
                smtp_sender(smtp)
            }
            Transport::Sendmail => Ok(Sender::Sendmail(SendmailTransport::new())),
            Transport::File => email
                .file_dir
                .clone()
                .map(Sender::File)
                .ok_or(EmailError::Invalid(
                    "transport file needs `file_dir`".into(),
                )),
        }
    }

    /// Sends `bytes` to the envelope's recipients; `name` is the file name the file transport
    /// writes. A transport never touches the outbox: the outbox owns its files.
    pub(crate) fn send(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        name: &str,
    ) -> Result<(), EmailError> {
        let (from, to) = (&envelope.from, &envelope.to);
        let parse = |address: &str| {
            address
                .parse::<Address>()
                .map_err(|err| EmailError::Invalid(format!("address {address:?}: {err}")))
        };
        let smtp_envelope = lettre::address::Envelope::new(
            Some(parse(from)?),
            to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
        )
        .map_err(|err| EmailError::Invalid(format!("envelope: {err}")))?;
        match self {
            Sender::Smtp { transport, relay } => transport
                .send_raw(&smtp_envelope, bytes)
                .map(drop)
                .map_err(|err| smtp_error(relay, &err)),
            Sender::Sendmail(transport) => transport
                .send_raw(&smtp_envelope, bytes)
                .map_err(|err| EmailError::Sendmail(err.to_string())),
            Sender::File(dir) => {
                let path = dir.join(name);
                std::fs::create_dir_all(dir)
                    .map_err(|err| err.to_string())
                    .and_then(|()| {
                        crate::host::atomic_file::write(&path, bytes, 0o600)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|message| EmailError::File { path, message })
            }
        }
    }
}

fn smtp_sender(smtp: &SmtpConfig) -> Result<Sender, EmailError> {
    let port = smtp.port();
    let tls = match smtp.security {
        SmtpSecurity::None => Tls::None,
        SmtpSecurity::Starttls => Tls::Required(tls_parameters(smtp)?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_parameters(smtp)?),
    };
    let timeout: Duration = smtp.timeout.into();
    let mut builder = SmtpTransport::builder_dangerous(smtp.host.clone())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(username) = &smtp.username {
        let password = password(smtp.password_file.as_deref())?;
        builder = builder
            .credentials(Credentials::new(username.clone(), password))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(Sender::Smtp {
        transport: builder.build(),
        relay: format!("{}:{port}", smtp.host),
    })
}

fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, EmailError> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(ca_file) = &smtp.ca_file {
        let pem = std::fs::read(ca_file).map_err(|err| {
            EmailError::Invalid(format!("email.smtp.ca_file {}: {err}", ca_file.display()))
        })?;
        // An empty or wrong file would leave only the system's roots, and the mail would fail
        // later with a vaguer error.
        if !pem
            .windows(CERTIFICATE_PEM.len())
            .any(|window| window == CERTIFICATE_PEM)
        {
            return Err(EmailError::Invalid(format!(
                "email.smtp.ca_file {}: holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)",
                ca_file.display()
            )));
        }
        let certificate = Certificate::from_pem(&pem).map_err(|err| {
            EmailError::Invalid(format!("email.smtp.ca_file {}: {err}", ca_file.display()))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|err| EmailError::Invalid(format!("TLS setup for {}: {err}", smtp.host)))
}

/// How a certificate begins in a PEM file.
const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The SMTP password: the systemd credential when there is one, else `password_file`.
fn password(password_file: Option<&Path>) -> Result<String, EmailError> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join(PASSWORD_CREDENTIAL);
        if credential.exists() {
            return read_secret(&credential);
        }
    }
    let path = password_file.ok_or_else(|| {
        EmailError::Password(format!(
            "email.smtp.username is set but there is no password: set email.smtp.password_file or pass the systemd credential {PASSWORD_CREDENTIAL}"
        ))
    })?;
    crate::host::secret::read_root_only(path).map_err(EmailError::Password)
}

fn read_secret(path: &Path) -> Result<String, EmailError> {
    crate::host::secret::read(path).map_err(EmailError::Password)
}

/// What rustls' certificate verdicts (as its messages spell them) mean, and what to do.
const TLS_ADVICE: [(&str, &str); 14] = [
    (
        "CaUsedAsEndEntity",
        "the relay presents a CA certificate (CA:TRUE, what `openssl req -x509` makes by default) as its own server certificate, and TLS clients refuse that; give the relay a server certificate with basicConstraints CA:FALSE (e.g. openssl req -x509 … -addext basicConstraints=critical,CA:FALSE, or one signed by a small CA of your own) and put its CA in email.smtp.ca_file",
    ),
    (
        "UnknownIssuer",
        "the relay's certificate is signed by a CA this host does not trust; put that CA's certificate (PEM) in email.smtp.ca_file",
    ),
    (
        "certificate not valid for name",
        "the relay's certificate does not carry the name selfheal connects to; set email.smtp.host to a name the certificate is valid for (see below), or reissue it with that name in its subjectAltName",
    ),
    (
        "NotValidForName",
        "the relay's certificate does not carry the name selfheal connects to; set email.smtp.host to a name the certificate is valid for, or reissue it with that name in its subjectAltName",
    ),
    (
        "certificate expired",
        "the relay's certificate has expired; renew it on the relay (or check this host's clock)",
    ),
    (
        "Expired",
        "the relay's certificate has expired; renew it on the relay (or check this host's clock)",
    ),
    (
        "certificate not valid yet",
        "the relay's certificate is not valid yet; check the clocks of this host and of the relay",
    ),
    (
        "NotValidYet",
        "the relay's certificate is not valid yet; check the clocks of this host and of the relay",
    ),
    (
        "Revoked",
        "the relay's certificate has been revoked; the relay needs a new one",
    ),
    (
        "BadSignature",
        "the relay's certificate does not verify against the CA it names; email.smtp.ca_file holds another CA, or the certificate is damaged",
    ),
    (
        "UnsupportedSignatureAlgorithm",
        "the relay's certificate is signed with an algorithm that is no longer accepted (e.g. SHA-1); reissue it with SHA-256",
    ),
    (
        "does not allow extended key usage",
        "the relay's certificate is not for TLS servers (extendedKeyUsage lacks serverAuth); reissue it with extendedKeyUsage=serverAuth",
    ),
    (
        "InvalidPurpose",
        "the relay's certificate is not for TLS servers (extendedKeyUsage lacks serverAuth); reissue it with extendedKeyUsage=serverAuth",
    ),
    (
        "BadEncoding",
        "the relay sent a certificate that cannot be parsed; check the certificate file the relay is configured with",
    ),
];

/// The sentence for a TLS certificate problem in `message`, when it is one.
fn tls_advice(message: &str) -> Option<&'static str> {
    if !message.contains("certificate") {
        return None;
    }
    TLS_ADVICE
        .iter()
        .find(|(token, _)| message.contains(token))
        .map(|(_, advice)| *advice)
}

/// lettre's errors carry the server's reply; a 535 gets a message that says what to check,
/// a certificate that TLS refuses gets one that says what is wrong with it.
fn smtp_error(relay: &str, err: &lettre::transport::smtp::Error) -> EmailError {
    let message = err.to_string();
    if let Some(advice) = tls_advice(&message) {
        return EmailError::Tls {
            relay: relay.to_owned(),
            advice,
            cause: message,
        };
    }
    match err.status() {
        Some(code) if code.to_string() == "535" || code.to_string() == "534" => {
            EmailError::AuthRejected(message)
        }
        _ => EmailError::Smtp {
            relay: relay.to_owned(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_verdicts_get_sentences() {
        let table = [
            (
                "Connection error: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                "CA:FALSE",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                "email.smtp.ca_file",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"mail\"; certificate is only valid for localhost",
                "email.smtp.host",
            ),
            (
                "invalid peer certificate: certificate expired: verification time 1 (UNIX), (5 seconds ago)",
                "renew",
            ),
        ];
        for (message, expected) in table {
            let advice = tls_advice(message).unwrap_or_else(|| panic!("no advice for {message}"));
            assert!(advice.contains(expected), "{message}: {advice}");
        }
        assert_eq!(tls_advice("Connection refused (os error 111)"), None);
    }
}
