//! Real `nats-server` processes with JetStream for the `nats` exporter and receiver
//! tests: one node or a three-node cluster, on free loopback ports, each with its own
//! store directory. `scripts/test` installs Debian's `nats-server`.

use super::{free_port, http_get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server` (`TRADEWATCH_NATS_SERVER` overrides; else on PATH, else Debian's
/// /usr/sbin), checked to run.
pub fn nats_server_bin() -> PathBuf {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let p = match std::env::var_os("TRADEWATCH_NATS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => ["nats-server", "/usr/sbin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| runs(p))
            .unwrap_or_else(|| "nats-server".into()),
    };
    assert!(
        runs(&p),
        "nats-server is missing: run scripts/test (it installs Debian's nats-server package) \
         or set TRADEWATCH_NATS_SERVER to a nats-server binary with JetStream (2.9+)"
    );
    p
}

pub struct NatsServer {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub cluster_port: Option<u16>,
    conf: PathBuf,
    log: PathBuf,
}

impl NatsServer {
    /// One JetStream node on a free port, its data under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        NatsServer::start_on(dir, free_port())
    }

    /// One JetStream node on `port`.
    pub fn start_on(dir: &Path, port: u16) -> NatsServer {
        let mut s = NatsServer::configure(dir, "n1", port, None, &[]);
        s.launch();
        s.wait_ready();
        s
    }

    /// A three-node JetStream cluster; waits until every node reports JetStream healthy.
    pub fn cluster(dir: &Path) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = (0..3)
            .map(|i| {
                NatsServer::configure(
                    dir,
                    &format!("n{}", i + 1),
                    free_port(),
                    Some(routes[i]),
                    &routes,
                )
            })
            .collect();
        for n in &mut nodes {
            n.launch();
        }
        for n in &nodes {
            n.wait_ready();
        }
        nodes
    }

    fn configure(
        dir: &Path,
        name: &str,
        port: u16,
        cluster_port: Option<u16>,
        routes: &[u16],
    ) -> NatsServer {
        let store = dir.join(format!("nats-{name}"));
        std::fs::create_dir_all(&store).expect("nats store dir");
        let monitor = free_port();
        let mut conf = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{\n  store_dir: {store:?}\n}}\n"
        );
        if let Some(cp) = cluster_port {
            let routes: Vec<String> = routes
                .iter()
                .filter(|r| **r != cp)
                .map(|r| format!("\"nats-route://127.0.0.1:{r}\""))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: tw\n  listen: \"127.0.0.1:{cp}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let conf_path = dir.join(format!("nats-{name}.conf"));
        std::fs::write(&conf_path, conf).expect("write nats config");
        NatsServer {
            child: None,
            name: name.into(),
            port,
            monitor,
            cluster_port,
            conf: conf_path,
            log: dir.join(format!("nats-{name}.log")),
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
    }

    /// Waits until `/healthz` says JetStream is ready on this node.
    pub fn wait_ready(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/healthz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not become healthy within 30 s:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no goodbye to clients or peers.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: nats-server is running");
        self.launch();
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
