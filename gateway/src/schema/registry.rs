//! A Confluent Schema Registry client: register, look up, test
//! compatibility, read the latest version and per-subject config. Basic or
//! bearer auth from the environment, a timeout per call, retries with
//! backoff on 5xx and transport errors.

use std::time::Duration;

use axum::body::{Body, Bytes};
use base64::Engine;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::compat::Level;
use crate::upstream::HttpClient;

/// `GATEWAY_REGISTRY_USER` / `GATEWAY_REGISTRY_PASSWORD`: basic auth.
pub const ENV_USER: &str = "GATEWAY_REGISTRY_USER";
/// See [`ENV_USER`].
pub const ENV_PASSWORD: &str = "GATEWAY_REGISTRY_PASSWORD";
/// `GATEWAY_REGISTRY_TOKEN`: bearer token (wins over basic auth).
pub const ENV_TOKEN: &str = "GATEWAY_REGISTRY_TOKEN";

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ATTEMPTS: u32 = 3;

/// What went wrong talking to the registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// No answer, or a broken exchange, after every retry.
    #[error("{url}: {detail}")]
    Transport {
        /// The request URL.
        url: String,
        /// Cause.
        detail: String,
    },
    /// The registry answered with an error.
    #[error("{url}: registry answered {status} (error_code {code}): {message}")]
    Status {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Confluent `error_code`, 0 when absent.
        code: i64,
        /// Confluent `message`, or the body.
        message: String,
    },
}

impl RegistryError {
    fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::Status { status: 404, .. })
    }
}

/// The latest version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Global schema id.
    pub id: u32,
    /// Version under the subject.
    pub version: u32,
    /// The schema text.
    pub schema: String,
}

/// A registry at one base URL.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    client: HttpClient,
    timeout: Duration,
    auth: Option<HeaderValue>,
}

/// Credentials for the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// HTTP basic auth.
    Basic {
        /// User (API key).
        user: String,
        /// Password (API secret).
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl RegistryAuth {
    /// From `GATEWAY_REGISTRY_TOKEN`, else `GATEWAY_REGISTRY_USER` and
    /// `GATEWAY_REGISTRY_PASSWORD`; `None` when neither is set.
    pub fn from_env() -> Option<Self> {
        if let Ok(token) = std::env::var(ENV_TOKEN) {
            return Some(RegistryAuth::Bearer(token));
        }
        let user = std::env::var(ENV_USER).ok()?;
        Some(RegistryAuth::Basic {
            user,
            password: std::env::var(ENV_PASSWORD).unwrap_or_default(),
        })
    }

    fn header(&self) -> Option<HeaderValue> {
        let value = match self {
            RegistryAuth::Bearer(token) => format!("Bearer {token}"),
            RegistryAuth::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        };
        let mut v = HeaderValue::from_str(&value).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl RegistryClient {
    /// A client for `base`, with credentials from the environment.
    pub fn new(base: &str, client: HttpClient, timeout: Duration) -> Self {
        Self::with_auth(base, client, timeout, RegistryAuth::from_env())
    }

    /// A client for `base` with the given credentials.
    pub fn with_auth(
        base: &str,
        client: HttpClient,
        timeout: Duration,
        auth: Option<RegistryAuth>,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client,
            timeout,
            auth: auth.and_then(|a| a.header()),
        }
    }

    /// Registers `schema` under `subject` (the registry returns the existing
    /// id for a schema it already has) and returns the id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let v = self
            .call(Method::POST, &url, Some(json!({ "schema": schema })))
            .await?;
        id_in(&url, &v)
    }

    /// The id of `schema` under `subject`, or `None` when not registered.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let url = format!("{}/subjects/{}", self.base, subject);
        match self
            .call(Method::POST, &url, Some(json!({ "schema": schema })))
            .await
        {
            Ok(v) => id_in(&url, &v).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The registry's verdict for `schema` against the subject's versions
    /// under the subject's level (every version for a transitive level):
    /// empty when compatible (or when the subject does not exist yet), else
    /// the registry's messages.
    pub async fn incompatibilities(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let url = format!(
            "{}/compatibility/subjects/{}/versions?verbose=true",
            self.base, subject
        );
        match self
            .call(Method::POST, &url, Some(json!({ "schema": schema })))
            .await
        {
            Ok(v) if v["is_compatible"].as_bool() == Some(true) => Ok(Vec::new()),
            Ok(v) => {
                let mut messages: Vec<String> = v["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if messages.is_empty() {
                    messages.push("the registry reports the schema as incompatible".into());
                }
                Ok(messages)
            }
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The latest version under `subject`, or `None` for an unknown subject.
    pub async fn latest(&self, subject: &str) -> Result<Option<Latest>, RegistryError> {
        let url = format!("{}/subjects/{}/versions/latest", self.base, subject);
        match self.call(Method::GET, &url, None).await {
            Ok(v) => Ok(Some(Latest {
                id: id_in(&url, &v)?,
                version: v["version"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                schema: v["schema"].as_str().unwrap_or_default().to_string(),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The schema text with this global id.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let v = self.call(Method::GET, &url, None).await?;
        v["schema"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Transport {
                url,
                detail: "answer has no schema".into(),
            })
    }

    /// The subject's compatibility level, or `None` when it has none of its own.
    pub async fn subject_level(&self, subject: &str) -> Result<Option<Level>, RegistryError> {
        let url = format!("{}/config/{}", self.base, subject);
        match self.call(Method::GET, &url, None).await {
            Ok(v) => Ok(v["compatibilityLevel"]
                .as_str()
                .or_else(|| v["compatibility"].as_str())
                .and_then(|l| l.parse().ok())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the subject's compatibility level.
    pub async fn set_subject_level(
        &self,
        subject: &str,
        level: Level,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/config/{}", self.base, subject);
        self.call(
            Method::PUT,
            &url,
            Some(json!({ "compatibility": level.as_str() })),
        )
        .await
        .map(|_| ())
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, RegistryError> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let outcome = self.once(method.clone(), url, body.as_ref()).await;
            let retry = match &outcome {
                Err(RegistryError::Transport { .. }) => true,
                Err(RegistryError::Status { status, .. }) => *status >= 500,
                Ok(_) => false,
            };
            if !retry || attempt == ATTEMPTS {
                return outcome;
            }
            tracing::debug!(url, attempt, "schema registry call failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 4;
            attempt += 1;
        }
    }

    async fn once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, RegistryError> {
        let transport = |detail: String| RegistryError::Transport {
            url: url.to_string(),
            detail,
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, format!("{CONTENT_TYPE}, application/json"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, CONTENT_TYPE);
        }
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<(StatusCode, Bytes), RegistryError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                transport(format!("no answer within {} ms", self.timeout.as_millis()))
            })??;
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                code: parsed["error_code"].as_i64().unwrap_or(0),
                message: parsed["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string,
                ),
            });
        }
        Ok(parsed)
    }
}

fn id_in(url: &str, v: &Value) -> Result<u32, RegistryError> {
    v["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| RegistryError::Transport {
            url: url.to_string(),
            detail: format!("answer has no numeric id: {v}"),
        })
}
