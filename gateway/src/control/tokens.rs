//! Bearer tokens for admin writes, each with a name the audit trail uses.

use subtle::ConstantTimeEq;

use std::collections::BTreeMap;
use std::path::Path;

/// `GATEWAY_ADMIN_TOKEN`: a token named `env`.
pub const ENV_TOKEN: &str = "GATEWAY_ADMIN_TOKEN";

/// Named tokens. Empty = admin writes disabled.
#[derive(Clone, Default)]
pub struct Tokens {
    by_name: BTreeMap<String, String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: secrets never reach a log.
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: BTreeMap<String, String>,
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured: writes are disabled.
    Disabled,
    /// No (bearer) credentials given: 401.
    Missing,
    /// A token that is not configured: 403.
    Wrong,
}

impl Tokens {
    /// Tokens from the file (if any) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let parsed: TokensFile =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            by_name.extend(parsed.tokens.into_iter().filter(|(_, t)| !t.is_empty()));
        }
        if let Ok(token) = std::env::var(ENV_TOKEN) {
            if !token.is_empty() {
                by_name.insert("env".to_string(), token);
            }
        }
        Ok(Self { by_name })
    }

    /// From explicit pairs (tests, embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            by_name: pairs
                .into_iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        }
    }

    /// Adds a named token.
    pub fn add(&mut self, name: &str, token: &str) {
        if !token.is_empty() {
            self.by_name.insert(name.to_string(), token.to_string());
        }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// The name of the token in an `Authorization` header.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<String, Denied> {
        if !self.enabled() {
            return Err(Denied::Disabled);
        }
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let given = authorization.and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
        let Some(given) = given else {
            return Err(Denied::Missing);
        };
        // Every configured token is compared, each in constant time, so the
        // answer's timing tells nothing about how much of a token matched
        // or which one did.
        let given = given.trim().as_bytes();
        let mut found = None;
        for (name, token) in &self.by_name {
            if bool::from(token.as_bytes().ct_eq(given)) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found.ok_or(Denied::Wrong)
    }
}

/// Comparison whose time does not depend on where the inputs differ.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authorize_by_name_and_refuse_otherwise() {
        let t = Tokens::from_pairs([("alice", "s3cret"), ("ci", "other")]);
        assert_eq!(t.authorize(Some("Bearer s3cret")), Ok("alice".into()));
        assert_eq!(t.authorize(Some("Bearer other")), Ok("ci".into()));
        assert_eq!(
            t.authorize(Some("bearer other")),
            Ok("ci".into()),
            "scheme is case-insensitive"
        );
        assert_eq!(t.authorize(Some("Bearer nope")), Err(Denied::Wrong));
        assert_eq!(t.authorize(Some("Basic abc")), Err(Denied::Missing));
        assert_eq!(t.authorize(None), Err(Denied::Missing));
        assert_eq!(
            Tokens::default().authorize(Some("Bearer s3cret")),
            Err(Denied::Disabled)
        );
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
