//! `[kafka.security]`: TLS and SASL to the brokers, with credentials from the
//! environment or from files, never from `routes.toml` itself.
//!
//! Credentials are read when the config is read (start and every reload),
//! kept in a [`Secret`] whose `Debug` prints nothing, and handed to
//! librdkafka only; they are not logged and not served by the admin API.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Problem;

/// Environment variable read for the SASL password unless
/// `password_env` names another one.
pub const DEFAULT_PASSWORD_ENV: &str = "GATEWAY_KAFKA_SASL_PASSWORD";

/// A credential: its value never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL (local development only).
    #[default]
    Plaintext,
    /// TLS, no SASL (mutual TLS with `cert_file` and `key_file`).
    Ssl,
    /// SASL without TLS: the password crosses the network in the clear with
    /// PLAIN; only for a trusted network.
    SaslPlaintext,
    /// SASL over TLS: what Confluent Cloud and Amazon MSK expect.
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Username and password, sent as they are (TLS protects them).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth bearer tokens: librdkafka's OIDC client-credentials flow
    /// (`sasl.oauthbearer.*` in `kafka.properties`), or its unsecured JWTs
    /// for development.
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }

    fn needs_password(self) -> bool {
        !matches!(self, SaslMechanism::OauthBearer)
    }
}

/// Where the password came from, or why it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Credential {
    /// None configured.
    #[default]
    Missing,
    /// Read.
    Loaded(Secret),
    /// `password_file` could not be read (the message names the file, not
    /// its content).
    Unreadable(String),
}

/// `[kafka.security]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (needed
    /// with the `sasl_*` protocols).
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name (an API key on Confluent Cloud).
    pub username: Option<String>,
    /// Environment variable holding the password (an API secret on
    /// Confluent Cloud); `GATEWAY_KAFKA_SASL_PASSWORD` by default.
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// File holding the password (a mounted Kubernetes secret), relative to
    /// the config file; wins over `password_env`. One trailing newline is
    /// ignored.
    pub password_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for the brokers;
    /// the system's store by default.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Check that the broker's certificate names the host connected to
    /// (default true; turn off only for test certificates).
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    /// The password, read when the config is read.
    #[serde(skip)]
    pub password: Credential,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: SecurityProtocol::default(),
            sasl_mechanism: None,
            username: None,
            password_env: default_password_env(),
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_hostname: true,
            password: Credential::Missing,
        }
    }
}

fn default_password_env() -> String {
    DEFAULT_PASSWORD_ENV.to_string()
}

fn default_true() -> bool {
    true
}

/// librdkafka properties that carry security settings: they belong in
/// `[kafka.security]`, where credentials come from the environment or a file
/// rather than from `routes.toml`.
pub(super) fn security_property(key: &str) -> bool {
    key == "security.protocol"
        || key.starts_with("sasl.username")
        || key.starts_with("sasl.password")
        || key == "ssl.key.password"
        || key == "ssl.keystore.password"
        || key == "sasl.oauthbearer.client.secret"
}

impl KafkaSecurity {
    /// Makes the file paths absolute (against the config file's directory)
    /// and reads the password from `password_file` or `password_env`.
    pub fn prepare(&mut self, base_dir: &Path, env: &dyn Fn(&str) -> Option<String>) {
        for file in [
            &mut self.password_file,
            &mut self.ca_file,
            &mut self.cert_file,
            &mut self.key_file,
        ]
        .into_iter()
        .flatten()
        {
            *file = super::resolve_in(base_dir, file);
        }
        self.password = match &self.password_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let value = text
                        .strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text);
                    Credential::Loaded(Secret::new(value))
                }
                Err(e) => Credential::Unreadable(format!(
                    "kafka.security.password_file {}: {e}",
                    path.display()
                )),
            },
            None => env(&self.password_env)
                .filter(|v| !v.is_empty())
                .map(|v| Credential::Loaded(Secret::new(v)))
                .unwrap_or(Credential::Missing),
        };
    }

    /// Problems with the settings as a whole.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |m: String| problems.push(Problem::global(m));
        match (self.protocol.sasl(), self.sasl_mechanism) {
            (true, None) => problem(format!(
                "kafka.security.protocol = {:?} needs sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)",
                self.protocol.as_str()
            )),
            (false, Some(m)) => problem(format!(
                "kafka.security.sasl_mechanism = {:?} needs protocol = \"sasl_ssl\" (or \"sasl_plaintext\")",
                m.as_str()
            )),
            (true, Some(m)) if m.needs_password() => {
                if self.username.as_deref().is_none_or(str::is_empty) {
                    problem(format!(
                        "kafka.security: SASL {} needs a username (kafka.security.username or GATEWAY_KAFKA_SASL_USERNAME)",
                        m.as_str()
                    ));
                }
                match &self.password {
                    Credential::Loaded(_) => {}
                    Credential::Unreadable(e) => problem(e.clone()),
                    Credential::Missing => problem(format!(
                        "kafka.security: SASL {} needs a password: set the environment variable {} or kafka.security.password_file",
                        m.as_str(),
                        self.password_env
                    )),
                }
            }
            _ => {}
        }
        if !self.protocol.tls() {
            for (name, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
            ] {
                if set {
                    problem(format!(
                        "kafka.security.{name} needs protocol = \"ssl\" or \"sasl_ssl\""
                    ));
                }
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problem("kafka.security: cert_file and key_file go together".to_string());
        }
        for (name, file) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = file {
                if !path.is_file() {
                    problem(format!(
                        "kafka.security.{name} {}: no such file",
                        path.display()
                    ));
                }
            }
        }
    }

    /// Sets the librdkafka properties for these settings.
    pub fn apply(&self, cc: &mut rdkafka::ClientConfig) {
        cc.set("security.protocol", self.protocol.as_str());
        if let Some(m) = self.sasl_mechanism {
            cc.set("sasl.mechanism", m.as_str());
        }
        if let Some(user) = &self.username {
            cc.set("sasl.username", user);
        }
        if let Credential::Loaded(secret) = &self.password {
            cc.set("sasl.password", secret.expose());
        }
        if self.protocol.tls() {
            if let Some(ca) = &self.ca_file {
                cc.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                cc.set("ssl.certificate.location", cert.to_string_lossy());
                cc.set("ssl.key.location", key.to_string_lossy());
            }
            cc.set(
                "ssl.endpoint.identification.algorithm",
                if self.verify_hostname {
                    "https"
                } else {
                    "none"
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanism: SaslMechanism) -> KafkaSecurity {
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(mechanism),
            username: Some("gateway".into()),
            ..KafkaSecurity::default()
        }
    }

    fn problems(s: &KafkaSecurity) -> Vec<String> {
        let mut p = Vec::new();
        s.validate(&mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_password_comes_from_the_named_variable_and_never_shows_in_debug() {
        let mut s = sasl(SaslMechanism::ScramSha512);
        s.prepare(Path::new("."), &|name| {
            (name == DEFAULT_PASSWORD_ENV).then(|| "hunter2".to_string())
        });
        assert_eq!(s.password, Credential::Loaded(Secret::new("hunter2")));
        assert!(problems(&s).is_empty());
        assert!(!format!("{s:?}").contains("hunter2"));
        let mut cc = rdkafka::ClientConfig::new();
        s.apply(&mut cc);
        assert_eq!(cc.get("sasl.password"), Some("hunter2"));
        assert_eq!(cc.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
    }

    #[test]
    fn a_password_file_wins_and_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), "s3cret\n").expect("write");
        let mut s = sasl(SaslMechanism::Plain);
        s.password_file = Some("pw".into());
        s.prepare(dir.path(), &|_| Some("from-env".to_string()));
        assert_eq!(s.password, Credential::Loaded(Secret::new("s3cret")));
    }

    #[test]
    fn missing_credentials_are_named_without_their_values() {
        let mut s = sasl(SaslMechanism::Plain);
        s.username = None;
        s.prepare(Path::new("."), &|_| None);
        let p = problems(&s);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("needs a username"));
        assert!(p[1].contains("GATEWAY_KAFKA_SASL_PASSWORD"));

        s.password_file = Some("/nonexistent/kafka-password".into());
        s.prepare(Path::new("."), &|_| None);
        assert!(problems(&s)
            .iter()
            .any(|m| m.contains("password_file /nonexistent/kafka-password")));
    }

    #[test]
    fn protocol_and_mechanism_must_agree() {
        let s = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            ..KafkaSecurity::default()
        };
        assert!(problems(&s)[0].contains("needs sasl_mechanism"));
        let s = KafkaSecurity {
            sasl_mechanism: Some(SaslMechanism::Plain),
            ..KafkaSecurity::default()
        };
        assert!(problems(&s)[0].contains("needs protocol"));
        let s = KafkaSecurity {
            ca_file: Some("ca.pem".into()),
            ..KafkaSecurity::default()
        };
        assert!(problems(&s)[0].contains("ca_file needs protocol"));
    }

    #[test]
    fn oauthbearer_needs_no_password() {
        let s = sasl(SaslMechanism::OauthBearer);
        assert!(problems(&s).is_empty());
    }
}
