//! Environment variables that override `routes.toml`: the settings that
//! differ per environment (addresses, the Kafka cluster and its credentials,
//! the Schema Registry, the spool), so one file serves every environment and
//! a container takes its differences from its environment.
//!
//! They are applied every time the file is read (start and reload), before
//! validation, so an override goes through the same checks as the file.

use std::path::PathBuf;

use serde::de::value::{Error as DeError, StrDeserializer};
use serde::Deserialize;

use super::{Config, ConfigError};

/// One override: the variable and the setting it replaces.
pub struct EnvOverride {
    /// Environment variable.
    pub var: &'static str,
    /// The `routes.toml` key it overrides.
    pub key: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

fn parse<T: for<'de> Deserialize<'de>>(v: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<DeError>::new(v)).map_err(|e| e.to_string())
}

/// Every override, in the order they are applied (also the README's table).
pub const OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        var: "GATEWAY_LISTEN",
        key: "server.listen",
        apply: |c, v| {
            c.server.listen = v.parse().map_err(|e| format!("{e}"))?;
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_ADMIN_LISTEN",
        key: "server.admin",
        apply: |c, v| {
            c.server.admin = v.parse().map_err(|e| format!("{e}"))?;
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_TLS_CERT_FILE",
        key: "server.tls.cert_file",
        apply: |c, v| {
            tls(c).cert_file = PathBuf::from(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_TLS_KEY_FILE",
        key: "server.tls.key_file",
        apply: |c, v| {
            tls(c).key_file = PathBuf::from(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_UPSTREAM_CA_FILE",
        key: "upstream_tls.ca_file",
        apply: |c, v| {
            c.upstream_tls.ca_file = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_BOOTSTRAP",
        key: "kafka.bootstrap",
        apply: |c, v| {
            c.kafka.bootstrap = v.to_string();
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_SECURITY_PROTOCOL",
        key: "kafka.security.protocol",
        apply: |c, v| {
            c.kafka.security.protocol = parse(v)?;
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_SASL_MECHANISM",
        key: "kafka.security.sasl_mechanism",
        apply: |c, v| {
            c.kafka.security.sasl_mechanism = Some(parse(v)?);
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_SASL_USERNAME",
        key: "kafka.security.username",
        apply: |c, v| {
            c.kafka.security.username = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_SASL_PASSWORD_FILE",
        key: "kafka.security.password_file",
        apply: |c, v| {
            c.kafka.security.password_file = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_KAFKA_CA_FILE",
        key: "kafka.security.ca_file",
        apply: |c, v| {
            c.kafka.security.ca_file = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_SCHEMA_REGISTRY_URL",
        key: "schemas.registry",
        apply: |c, v| {
            c.schemas.registry = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_SPOOL_DIR",
        key: "spool.dir",
        apply: |c, v| {
            c.spool.dir = PathBuf::from(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "GATEWAY_ADMIN_TOKENS_FILE",
        key: "admin.tokens_file",
        apply: |c, v| {
            c.admin.tokens_file = Some(PathBuf::from(v));
            Ok(())
        },
    },
];

/// `[server.tls]`, made when an override is its first mention (the other
/// file then has to come from its own variable; validation says so).
fn tls(c: &mut Config) -> &mut super::ServerTls {
    c.server.tls.get_or_insert_with(|| super::ServerTls {
        cert_file: PathBuf::new(),
        key_file: PathBuf::new(),
        reload_interval_secs: super::default_tls_reload_secs(),
    })
}

/// Prefix and suffix of `GATEWAY_UPSTREAM_<NAME>_URL`, which overrides
/// `upstreams.<name>.url` (name upper-cased, `-` and `.` as `_`).
pub const UPSTREAM_URL_PREFIX: &str = "GATEWAY_UPSTREAM_";
/// See [`UPSTREAM_URL_PREFIX`].
pub const UPSTREAM_URL_SUFFIX: &str = "_URL";

/// The variable that overrides an upstream's URL.
pub fn upstream_url_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("{UPSTREAM_URL_PREFIX}{name}{UPSTREAM_URL_SUFFIX}")
}

/// Applies the overrides found by `env`; returns the variables used (their
/// names only: values may be credentials).
pub fn apply(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let mut used = Vec::new();
    let mut errors = Vec::new();
    for o in OVERRIDES {
        if let Some(value) = env(o.var).filter(|v| !v.is_empty()) {
            match (o.apply)(config, &value) {
                Ok(()) => used.push(o.var.to_string()),
                Err(e) => errors.push(format!("{} (overrides {}): {e}", o.var, o.key)),
            }
        }
    }
    for (name, upstream) in config.upstreams.iter_mut() {
        let var = upstream_url_var(name);
        if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
            upstream.url = value;
            used.push(var);
        }
    }
    if errors.is_empty() {
        Ok(used)
    } else {
        Err(ConfigError::Environment(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config() -> Config {
        toml::from_str(
            r#"
[kafka]
bootstrap = "localhost:9092"
[upstreams.order-service]
url = "http://orders:8080"
"#,
        )
        .expect("config")
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn variables_override_the_file() {
        let mut c = config();
        let used = apply(
            &mut c,
            &env(&[
                ("GATEWAY_LISTEN", "0.0.0.0:8443"),
                ("GATEWAY_KAFKA_BOOTSTRAP", "broker-1:9093,broker-2:9093"),
                ("GATEWAY_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("GATEWAY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                (
                    "GATEWAY_UPSTREAM_ORDER_SERVICE_URL",
                    "http://orders.prod:80",
                ),
                ("GATEWAY_SCHEMA_REGISTRY_URL", ""),
            ]),
        )
        .expect("applies");
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.kafka.bootstrap, "broker-1:9093,broker-2:9093");
        assert_eq!(
            c.kafka.security.protocol,
            super::super::SecurityProtocol::SaslSsl
        );
        assert_eq!(c.upstreams["order-service"].url, "http://orders.prod:80");
        assert_eq!(c.schemas.registry, None, "an empty variable is no override");
        assert_eq!(used.len(), 5, "{used:?}");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_key() {
        let mut c = config();
        let err = apply(
            &mut c,
            &env(&[
                ("GATEWAY_LISTEN", "not an address"),
                ("GATEWAY_KAFKA_SASL_MECHANISM", "KERBEROS"),
            ]),
        )
        .expect_err("refused")
        .to_string();
        assert!(
            err.contains("GATEWAY_LISTEN (overrides server.listen)"),
            "{err}"
        );
        assert!(err.contains("GATEWAY_KAFKA_SASL_MECHANISM"), "{err}");
    }

    #[test]
    fn the_readme_table_lists_every_variable() {
        let readme = include_str!("../../../README.md");
        for o in OVERRIDES {
            assert!(
                readme.contains(&format!("`{}`", o.var)),
                "README lacks {}",
                o.var
            );
        }
        assert!(readme.contains("`GATEWAY_UPSTREAM_<NAME>_URL`"));
        assert!(readme.contains(&format!("`{}`", super::super::DEFAULT_PASSWORD_ENV)));
    }
}
