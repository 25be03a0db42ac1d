//! Real Redis and PostgreSQL servers on free loopback ports, for the healthcheck
//! receiver's tests. Each can be stopped (an outage) and started again on the same port.
//!
//! Binaries: `TRADEWATCH_REDIS_SERVER` or `redis-server` on PATH; PostgreSQL's from
//! `TRADEWATCH_PG_BIN`, else `initdb` on PATH, else `/usr/lib/postgresql/*/bin` (Debian's
//! place). `scripts/test` installs both when missing. A server that cannot start fails
//! the test with its log.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, initdb and the server
//! run as `nobody` through `runuser` (util-linux, present on every Debian), in a temp
//! directory handed to that user.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_port(port: u16, what: &str, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 30 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-server --port P --requirepass PASSWORD`, without persistence.
pub struct Redis {
    pub port: u16,
    pub password: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start(password: &str) -> Redis {
        let mut r = Redis {
            port: free_port(),
            password: password.into(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.resume();
        r
    }

    fn binary() -> PathBuf {
        std::env::var_os("TRADEWATCH_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// Starts the server (again) on its port and waits until it listens.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log");
        let child = Command::new(Redis::binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", &self.password])
            .args(["--dir", &self.dir.path().display().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}. Install Redis (`apt-get install -y redis-server`, as scripts/test does) or set TRADEWATCH_REDIS_SERVER",
                    Redis::binary().display()
                )
            });
        self.child = Some(child);
        wait_port(self.port, "redis-server", &|| self.logs());
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster made by `initdb` with a password-protected superuser, served by
/// `pg_ctl` on a free loopback port.
pub struct Postgres {
    pub port: u16,
    pub user: String,
    pub password: String,
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("TRADEWATCH_PG_BIN") {
        return PathBuf::from(d);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !p.is_empty() {
            if let Ok(real) = std::fs::canonicalize(&p) {
                if let Some(parent) = real.parent() {
                    return parent.to_path_buf();
                }
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: no initdb on PATH or in /usr/lib/postgresql/*/bin. \
             Install it (`apt-get install -y postgresql`, as scripts/test does) or set TRADEWATCH_PG_BIN"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command for a PostgreSQL binary, as `nobody` when this process is root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Postgres {
    pub fn start(user: &str, password: &str) -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the PostgreSQL temp dir to nobody");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, password).expect("password file");
        if is_root() {
            let _ = Command::new("chown").arg("nobody").arg(&pwfile).status();
        }
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", user, "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", bin.display()));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: free_port(),
            user: user.into(),
            password: password.into(),
            bin,
            dir,
            running: false,
        };
        pg.resume();
        pg
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/postgres",
            self.user, self.password, self.port
        )
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(!self.running, "postgres is already running");
        let out = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -h 127.0.0.1 -k {}",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "30", "start"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed ({}):\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        self.running = true;
        wait_port(self.port, "postgres", &|| self.logs());
    }

    /// Stops the server at once (an outage).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output();
        self.running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
