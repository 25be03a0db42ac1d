//! A real Prometheus server (Debian's 2.42 package, which `scripts/test` installs) on a free
//! loopback port, killed on drop, and its HTTP query API.

use super::{free_port, http_get, promtool};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (honouring its job and instance labels) every second.
    pub fn start(target: SocketAddr) -> Prometheus {
        Prometheus::start_with_config(&format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tradewatch\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n"
        ))
    }

    /// Runs with `config` as its prometheus.yml.
    pub fn start_with_config(config: &str) -> Prometheus {
        let bin = promtool()
            .parent()
            .map(|d| d.join("prometheus"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the real Prometheus ({}): {e}; scripts/test installs Debian's prometheus package", bin.display())
            });
        Prometheus { child, port, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Whether the server still runs (a bad config makes it exit at once).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `/api/v1/query`'s whole answer, or why there is none (not listening yet, a bad
    /// query: Prometheus's own error message).
    pub fn query_raw(&self, q: &str) -> Result<Value, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let (code, body) = http_get(addr, &format!("/api/v1/query?query={}", url_encode(q)))
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{code}: {}", v["error"].as_str().unwrap_or(&body)));
        }
        Ok(v)
    }

    /// The values of an instant query, by the series' labels (empty on any error).
    pub fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let Ok(v) = self.query_raw(q) else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let val = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), val))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
