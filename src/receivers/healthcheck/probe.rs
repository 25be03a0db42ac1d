//! The probes of the checks that need no AWS SDK: `http`, `tcp`, `redis`, `postgres`,
//! `freqtrade`. A probe answers `Ok` or a [`Failure`] whose message says what was wrong
//! in a user's words; the caller bounds it with the check's timeout and measures it.

use crate::config::Secret;
use crate::receivers::freqtrade::client::{ApiError, Auth, Client as FreqtradeClient};
use crate::receivers::freqtrade::models::ShowConfig;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why one probe failed: a short machine-readable `reason` (`status`, `body`, `timeout`,
/// `connect`, `auth`, `protocol`, `missing`, `state`) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// `GET url`: the status must be in `expect_status` (empty: any 2xx), then the body must
/// contain `body_contains`, and the JSON at `json_pointer` must exist (and equal
/// `json_equals` when given: a JSON string compares by its text, anything else by its
/// JSON form).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub url: String,
    pub expect_status: Vec<u16>,
    pub body_contains: Option<String>,
    pub json_pointer: Option<String>,
    pub json_equals: Option<String>,
}

impl HttpProbe {
    pub async fn run(&self, http: &reqwest::Client) -> Result<(), Failure> {
        let resp = http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| Failure::new(reqwest_reason(&e), reqwest_message(e)))?;
        let status = resp.status().as_u16();
        let status_ok = if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        };
        if !status_ok {
            let want = if self.expect_status.is_empty() {
                "a 2xx status".to_owned()
            } else {
                format!("one of {:?}", self.expect_status)
            };
            return Err(Failure::new(
                "status",
                format!("HTTP {status}, expected {want}"),
            ));
        }
        if self.body_contains.is_none() && self.json_pointer.is_none() {
            return Ok(());
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::new(reqwest_reason(&e), reqwest_message(e)))?;
        let text = String::from_utf8_lossy(&body);
        if let Some(needle) = &self.body_contains {
            if !text.contains(needle.as_str()) {
                return Err(Failure::new(
                    "body",
                    format!(
                        "HTTP {status} but the body does not contain {needle:?} (body starts {:?})",
                        excerpt(&text)
                    ),
                ));
            }
        }
        if let Some(pointer) = &self.json_pointer {
            let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                Failure::new(
                    "body",
                    format!(
                        "HTTP {status} but the body is not JSON ({e}); body starts {:?}",
                        excerpt(&text)
                    ),
                )
            })?;
            let Some(found) = json.pointer(pointer) else {
                return Err(Failure::new(
                    "body",
                    format!("HTTP {status} but the JSON body has nothing at {pointer}"),
                ));
            };
            if let Some(want) = &self.json_equals {
                let got = match found {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if &got != want {
                    return Err(Failure::new(
                        "body",
                        format!("HTTP {status} but {pointer} is {got:?}, expected {want:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

fn reqwest_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "protocol"
    }
}

/// The error without its URL (which may carry credentials), with its root cause: reqwest
/// says "error sending request", the cause says "Connection refused".
fn reqwest_message(e: reqwest::Error) -> String {
    let connect = e.is_connect();
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    if let Some(root) = root {
        msg = format!("{msg}: {root}");
    }
    if connect {
        format!("cannot connect: {msg}")
    } else {
        msg
    }
}

/// Connects to `address` (`HOST:PORT`) and closes.
pub async fn tcp(address: &str) -> Result<(), Failure> {
    TcpStream::connect(address)
        .await
        .map(drop)
        .map_err(|e| Failure::new("connect", format!("cannot connect to {address}: {e}")))
}

/// Redis: `AUTH` when the URL has a password, then `PING`, which must answer `PONG`.
///
/// Two RESP commands over a plain socket: the redis crate would add a client library to
/// the build for one round trip.
#[derive(Debug, Clone)]
pub struct RedisProbe {
    pub address: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl RedisProbe {
    pub async fn run(&self) -> Result<(), Failure> {
        let stream = TcpStream::connect(&self.address).await.map_err(|e| {
            Failure::new(
                "connect",
                format!("cannot connect to {}: {e}", self.address),
            )
        })?;
        let mut conn = BufReader::new(stream);
        if let Some(password) = &self.password {
            let mut args: Vec<&str> = vec!["AUTH"];
            if let Some(u) = &self.username {
                args.push(u);
            }
            args.push(password.expose());
            let reply = command(&mut conn, &args).await?;
            if !reply.starts_with('+') {
                return Err(Failure::new(
                    "auth",
                    format!("AUTH refused: {}", reply_text(&reply)),
                ));
            }
        }
        let reply = command(&mut conn, &["PING"]).await?;
        match reply.as_str() {
            "+PONG" => Ok(()),
            r if r.starts_with("-NOAUTH") => Err(Failure::new(
                "auth",
                format!(
                    "PING refused: {} (give the password in the URL: redis://:PASSWORD@HOST:PORT)",
                    reply_text(r)
                ),
            )),
            r => Err(Failure::new(
                "protocol",
                format!("PING answered {:?}, expected PONG", reply_text(r)),
            )),
        }
    }
}

fn reply_text(reply: &str) -> &str {
    reply.trim_start_matches(['+', '-'])
}

/// Sends one command as a RESP array and reads one line of reply (without CRLF).
async fn command(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String, Failure> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    let io = |e: std::io::Error| Failure::new("connect", format!("connection lost: {e}"));
    conn.get_mut().write_all(&req).await.map_err(io)?;
    let mut line = String::new();
    // A reply line longer than this is no reply to PING or AUTH.
    let n = (&mut *conn)
        .take(512)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    if n == 0 {
        return Err(Failure::new(
            "protocol",
            "the server closed the connection without answering",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// PostgreSQL: connects without TLS and runs `SELECT 1`.
#[derive(Debug, Clone)]
pub struct PostgresProbe {
    pub config: tokio_postgres::Config,
}

impl PostgresProbe {
    pub async fn run(&self, timeout: Duration) -> Result<(), Failure> {
        let mut config = self.config.clone();
        config.connect_timeout(timeout);
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_failure("connect", e))?;
        let mut conn = Box::pin(conn);
        let mut conn_ended = false;
        let answer = {
            let query = client.simple_query("SELECT 1");
            tokio::select! {
                r = query => r.map_err(|e| pg_failure("protocol", e)),
                r = &mut conn => {
                    conn_ended = true;
                    Err(match r {
                        Ok(()) => Failure::new("connect", "the server closed the connection"),
                        Err(e) => pg_failure("connect", e),
                    })
                }
            }
        };
        // Dropping the client makes the connection say goodbye (Terminate) and end, so
        // the server logs no broken connection every interval.
        drop(client);
        if !conn_ended {
            let _ = conn.await;
        }
        let rows = answer?;
        let one = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        match one.as_deref() {
            Some("1") => Ok(()),
            other => Err(Failure::new(
                "protocol",
                format!("SELECT 1 answered {other:?}"),
            )),
        }
    }
}

fn pg_failure(reason: &'static str, e: tokio_postgres::Error) -> Failure {
    let mut msg = e.to_string();
    if let Some(db) = e.as_db_error() {
        msg = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        return Failure::new(
            if db.code().code().starts_with("28") {
                "auth"
            } else {
                reason
            },
            msg,
        );
    }
    if let Some(src) = std::error::Error::source(&e) {
        msg = format!("{msg}: {src}");
    }
    Failure::new(reason, msg)
}

/// A Freqtrade bot: `/api/v1/ping`, then (with credentials) the bot's state from
/// `/api/v1/show_config`, which must be one of `states`.
pub struct FreqtradeProbe {
    pub client: Option<FreqtradeClient>,
    pub ping_client: FreqtradeClient,
    pub states: Vec<String>,
}

impl FreqtradeProbe {
    pub fn new(
        http: reqwest::Client,
        url: &str,
        login: Option<(String, Secret, Auth)>,
        states: Vec<String>,
        timeout: Duration,
    ) -> FreqtradeProbe {
        let ping_client = FreqtradeClient::new(
            http.clone(),
            url,
            String::new(),
            Secret::default(),
            Auth::Basic,
            timeout,
        );
        let client = login
            .map(|(user, pass, auth)| FreqtradeClient::new(http, url, user, pass, auth, timeout));
        FreqtradeProbe {
            client,
            ping_client,
            states,
        }
    }

    pub async fn run(&self) -> Result<(), Failure> {
        self.ping_client.ping().await.map_err(api_failure)?;
        let Some(client) = &self.client else {
            return Ok(());
        };
        let config: ShowConfig = client.get("show_config").await.map_err(api_failure)?;
        let state = config.state.unwrap_or_default();
        if self.states.is_empty() || self.states.contains(&state) {
            Ok(())
        } else {
            Err(Failure::new(
                "state",
                format!("the bot is {state:?}, expected one of {:?}", self.states),
            ))
        }
    }
}

fn api_failure(e: ApiError) -> Failure {
    let reason = match &e {
        ApiError::Connect(_) => "connect",
        ApiError::Timeout(_) => "timeout",
        ApiError::LoginRejected { .. } => "auth",
        ApiError::Status { .. } => "status",
        ApiError::Decode { .. } => "protocol",
    };
    Failure::new(reason, e.to_string())
}
