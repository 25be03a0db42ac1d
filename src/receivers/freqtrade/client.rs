//! The REST client of one Freqtrade bot: authentication, timeouts, reads and control
//! actions.
//!
//! JWT (the default): `POST /token/login` with HTTP Basic gives an access token (15 min)
//! and a refresh token (30 days). The access token is refreshed with `POST /token/refresh`
//! shortly before the `exp` in its payload (read, not verified: the bot verifies it), and a
//! 401 on a call drops the tokens, logs in again and retries the call once. `auth = "basic"`
//! sends the credentials with every call instead, which every Freqtrade version accepts.
//!
//! Errors never carry the password or a token: they are built from the status, the
//! server's short `detail`, and reqwest's error kind (whose URL holds no credentials).

use super::models::Tokens;
use crate::config::Secret;
use base64::Engine;
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Refresh the access token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    Jwt,
    Basic,
}

/// Why one call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("login rejected (HTTP {status}): check username and password")]
    LoginRejected { status: u16 },
    #[error("HTTP {status} from {path}: {detail}")]
    Status {
        status: u16,
        path: String,
        detail: String,
    },
    #[error("bad response from {path}: {message}")]
    Decode { path: String, message: String },
}

impl ApiError {
    /// The `reason` label of the `poll_failures` counter.
    pub fn reason(&self) -> String {
        match self {
            ApiError::Connect(_) => "connect".into(),
            ApiError::Timeout(_) => "timeout".into(),
            ApiError::LoginRejected { .. } => "login".into(),
            ApiError::Status { status, .. } => format!("http_{status}"),
            ApiError::Decode { .. } => "decode".into(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

struct Session {
    access: String,
    /// Seconds since the epoch; unknown when the token's payload cannot be read.
    access_exp: Option<u64>,
    refresh: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    /// `<url>/api/v1`.
    api: String,
    username: String,
    password: Secret,
    auth: Auth,
    timeout: Duration,
    session: Mutex<Option<Session>>,
}

impl Client {
    pub fn new(
        http: reqwest::Client,
        url: &str,
        username: String,
        password: Secret,
        auth: Auth,
        timeout: Duration,
    ) -> Client {
        let root = url.trim_end_matches('/');
        let root = root.strip_suffix("/api/v1").unwrap_or(root);
        Client {
            http,
            api: format!("{root}/api/v1"),
            username,
            password,
            auth,
            timeout,
            session: Mutex::new(None),
        }
    }

    /// `GET /api/v1/<path>` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let body = self.call(reqwest::Method::GET, path, None).await?;
        decode(path, &body)
    }

    /// `POST /api/v1/<path>`; the answer's `status`/`result` message.
    pub async fn post(&self, path: &str) -> Result<String, ApiError> {
        self.post_with(path, None).await
    }

    /// `POST /api/v1/forceexit` of one trade at market.
    pub async fn force_exit(&self, trade_id: u64) -> Result<String, ApiError> {
        let body = serde_json::json!({"tradeid": trade_id.to_string(), "ordertype": "market"});
        self.post_with("forceexit", Some(body.to_string())).await
    }

    async fn post_with(&self, path: &str, json: Option<String>) -> Result<String, ApiError> {
        let body = self.call(reqwest::Method::POST, path, json).await?;
        let v: serde_json::Value = decode(path, &body)?;
        Ok(["status", "result"]
            .iter()
            .find_map(|k| v.get(k).and_then(|s| s.as_str()))
            .unwrap_or_default()
            .to_owned())
    }

    /// `GET /api/v1/ping`: public, no credentials.
    pub async fn ping(&self) -> Result<(), ApiError> {
        let req = self.http.get(format!("{}/ping", self.api));
        let body = self.send("ping", req).await?;
        decode::<serde_json::Value>("ping", &body).map(|_| ())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        json: Option<String>,
    ) -> Result<bytes::Bytes, ApiError> {
        let url = format!("{}/{path}", self.api);
        let request = |method: reqwest::Method| {
            let req = self.http.request(method, &url);
            match &json {
                Some(b) => req
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(b.clone()),
                None => req,
            }
        };
        if self.auth == Auth::Basic {
            let req = request(method).basic_auth(&self.username, Some(self.password.expose()));
            return self.send(path, req).await;
        }
        let token = self.access_token().await?;
        let req = request(method.clone()).bearer_auth(&token);
        match self.send(path, req).await {
            Err(e) if e.status() == Some(401) => {
                // Rejected (the bot restarted with a new secret, or the token was revoked):
                // log in again and try once more. Calls of one poll run concurrently:
                // only the first to see the rejection drops the session, the others
                // take the new one.
                tracing::info!(path, "access token rejected; logging in again");
                {
                    let mut session = self.session.lock().await;
                    if session.as_ref().is_some_and(|s| s.access == token) {
                        *session = None;
                    }
                }
                let token = self.access_token().await?;
                self.send(path, request(method).bearer_auth(token)).await
            }
            r => r,
        }
    }

    /// A valid access token: the current one, a refreshed one near its expiry, or a new
    /// login.
    async fn access_token(&self) -> Result<String, ApiError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            let fresh = s
                .access_exp
                .is_none_or(|exp| now_secs() + REFRESH_MARGIN.as_secs() < exp);
            if fresh {
                return Ok(s.access.clone());
            }
            if let Some(refresh) = s.refresh.clone() {
                match self.refresh(&refresh).await {
                    Ok(access) => {
                        let s = session.as_mut().expect("checked above");
                        s.access_exp = jwt_exp(&access);
                        s.access = access.clone();
                        return Ok(access);
                    }
                    Err(e) => tracing::info!(error = %e, "token refresh failed; logging in again"),
                }
            }
        }
        let tokens = self.login().await?;
        let access = tokens.access_token.clone();
        *session = Some(Session {
            access_exp: jwt_exp(&tokens.access_token),
            access: tokens.access_token,
            refresh: tokens.refresh_token,
        });
        Ok(access)
    }

    async fn login(&self) -> Result<Tokens, ApiError> {
        let req = self
            .http
            .post(format!("{}/token/login", self.api))
            .basic_auth(&self.username, Some(self.password.expose()));
        match self.send("token/login", req).await {
            Ok(body) => decode("token/login", &body),
            Err(ApiError::Status {
                status: status @ (401 | 403),
                ..
            }) => Err(ApiError::LoginRejected { status }),
            Err(e) => Err(e),
        }
    }

    async fn refresh(&self, refresh: &str) -> Result<String, ApiError> {
        let req = self
            .http
            .post(format!("{}/token/refresh", self.api))
            .bearer_auth(refresh);
        let body = self.send("token/refresh", req).await?;
        decode::<Tokens>("token/refresh", &body).map(|t| t.access_token)
    }

    /// Sends with the timeout covering the whole exchange, body included.
    async fn send(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ApiError> {
        let exchange = async {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(transport)?;
            if !status.is_success() {
                return Err(ApiError::Status {
                    status: status.as_u16(),
                    path: path.to_owned(),
                    detail: detail(&body),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout(self.timeout))?
    }
}

fn transport(e: reqwest::Error) -> ApiError {
    // reqwest's Display names the URL, which holds no credentials; the source says why.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    ApiError::Connect(msg)
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The `detail` (FastAPI) or `error` (RPC) message of an error body, shortened.
fn detail(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["detail", "error"]
                .iter()
                .find_map(|k| v.get(k).and_then(|d| d.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    msg.chars().take(200).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `exp` claim of a JWT, read without verifying the signature (the bot does that).
pub fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()?
        .get("exp")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_recorded_tokens() {
        let login: Tokens = serde_json::from_str(include_str!(
            "../../../tests/fixtures/freqtrade/token_login.json"
        ))
        .unwrap();
        assert_eq!(jwt_exp(&login.access_token), Some(1795307045));
        assert_eq!(
            jwt_exp(login.refresh_token.as_deref().unwrap()),
            Some(1797898145)
        );
        let refresh: Tokens = serde_json::from_str(include_str!(
            "../../../tests/fixtures/freqtrade/token_refresh.json"
        ))
        .unwrap();
        assert!(refresh.refresh_token.is_none());
        assert_eq!(jwt_exp("not a token"), None);
    }

    #[test]
    fn error_details_are_short_and_named() {
        assert_eq!(
            detail(br#"{"detail": "Bot is not in the correct state."}"#),
            "Bot is not in the correct state."
        );
        assert_eq!(
            detail(br#"{"error": "Error querying /api/v1/count: trader is not running"}"#),
            "Error querying /api/v1/count: trader is not running"
        );
        assert_eq!(detail(&[b'x'; 1000]).len(), 200);
    }
}
