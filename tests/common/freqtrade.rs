//! The REAL Freqtrade 2026.9 bot (dry-run futures, offline: only exchange I/O is patched,
//! see `tests/peers/freqtrade/README.md`), started on a free loopback port and stopped
//! (exactly its PID) when dropped. Needs a Python with freqtrade 2026.9:
//! `TRADEWATCH_FREQTRADE_PYTHON`, else `TRADEWATCH_PYTHON`, else the repository's
//! `.venv`. A bot that cannot start fails the test with its log; it never skips.

use base64::Engine;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const USER: &str = "freqtrader";
pub const PASSWORD: &str = "SuperSecret1!";

pub fn peer_dir() -> PathBuf {
    super::repo_root().join("tests/peers/freqtrade")
}

/// The venv holding freqtrade 2026.9.
pub fn venv() -> PathBuf {
    let py = ["TRADEWATCH_FREQTRADE_PYTHON", "TRADEWATCH_PYTHON"]
        .iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join(".venv/bin/python"));
    let version = Command::new(&py)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('freqtrade'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(
        version.as_deref(),
        Some("2026.9"),
        "{} has no freqtrade 2026.9: set TRADEWATCH_FREQTRADE_PYTHON to a Python with \
         `pip install freqtrade==2026.9` (the venv of scripts/test has it)",
        py.display()
    );
    py.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// One real bot, stopped (exactly its PID, by stop.sh) when dropped.
pub struct Bot {
    pub port: u16,
    pub data: PathBuf,
}

impl Bot {
    pub fn start(venv: &Path, scenario: &str, data: PathBuf) -> Bot {
        Bot::start_with_env(venv, scenario, data, &[])
    }

    /// With extra environment for the bot (`FT_STOPLOSS=-0.99` keeps losing trades open).
    pub fn start_with_env(venv: &Path, scenario: &str, data: PathBuf, env: &[(&str, &str)]) -> Bot {
        let port = super::free_port();
        let out = Command::new("bash")
            .arg(peer_dir().join("start.sh"))
            .args(["--port", &port.to_string(), "--scenario", scenario])
            .arg("--data")
            .arg(&data)
            .arg("--venv")
            .arg(venv)
            // A busy 2-core CI machine: python imports alone took 20 s there.
            .env("FT_PING_TIMEOUT", "180")
            .envs(env.iter().copied())
            .output()
            .expect("run tests/peers/freqtrade/start.sh");
        let bot = Bot { port, data };
        assert!(
            out.status.success(),
            "the real freqtrade bot ({scenario}) did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bot
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bot process's PID (from DATA/freqtrade.pid).
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.data.join("freqtrade.pid"))
            .expect("DATA/freqtrade.pid")
            .trim()
            .parse()
            .expect("a PID")
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} /api/v1/{path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").expect("HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, body.to_owned())
    }

    /// `GET /api/v1/<path>` with HTTP Basic, as JSON.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// `POST /api/v1/<path>` with a JSON body, as JSON.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let (status, text) = self.call("POST", path, Some(&body.to_string()));
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// The bot's state as `/show_config` reports it (`running`, `paused`, `stopped`).
    pub fn state(&self) -> String {
        self.get("show_config")["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Replaces one pair's price, atomically (the bot re-reads the file on change).
    pub fn set_price(&self, pair: &str, price: f64) {
        let path = self.data.join("prices.json");
        let mut prices: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        prices[pair] = price.into();
        let tmp = self.data.join("prices.json.tmp");
        std::fs::write(&tmp, prices.to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(peer_dir().join("stop.sh"))
            .arg("--data")
            .arg(&self.data)
            .output();
    }
}
