//! The local stack (docker-compose.yml, deploy/, pipelines/local-stack.toml, the Grafana
//! dashboards), checked without Docker:
//!
//! - acceptance 1: every file the stack references exists; every host name and port agrees
//!   with the tradewatch configuration compose mounts (loaded with tradewatch's own config
//!   loader, in the environment compose gives the container from `.env.example`); every
//!   image is pinned; every `${VAR}` is defined in `.env.example`; the dashboards' datasource
//!   uids are provisioned; promtool and amtool accept the shipped Prometheus and
//!   Alertmanager files;
//! - acceptance 2: every PromQL query of every dashboard returns data from a real
//!   Prometheus 2.42 that scrapes `tradewatch demo` with the shipped scrape configuration.

mod common;

use common::prometheus::Prometheus;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tradewatch::component::{ComponentId, Kind};
use tradewatch::config::{component_config, Config, Source};

fn root() -> PathBuf {
    common::repo_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_file(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(v: &Yaml) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v:?}"))
}

/// `.env.example`'s `KEY=value` lines.
fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: not KEY=value: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Every `${NAME}` / `${NAME:-default}` / `${NAME-default}` in compose text.
fn compose_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// Substitutes compose's `${NAME}` / `${NAME:-default}` from `env`, as `docker compose` does.
fn substitute(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("unclosed ${") + i;
        let inner = &rest[i + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let value = env
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or(default.map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The container side of a `ports` entry ("127.0.0.1:4317:4317", "9090:9090", "8080").
fn container_port(entry: &Yaml) -> u16 {
    let text = match entry {
        Yaml::Number(n) => n.to_string(),
        other => s(other).to_owned(),
    };
    let last = text.rsplit(':').next().unwrap();
    last.split('/').next().unwrap().parse().unwrap_or_else(|e| {
        panic!("port entry {text:?}: {e}");
    })
}

/// A compose service: its image, its container ports (published or exposed), and its
/// bind mounts, container path → repo path.
struct Service {
    name: String,
    def: Yaml,
}

impl Service {
    fn ports(&self) -> BTreeSet<u16> {
        ["ports", "expose"]
            .iter()
            .filter_map(|k| self.def.get(*k).and_then(Yaml::as_sequence))
            .flatten()
            .map(container_port)
            .collect()
    }

    fn mounts(&self) -> Vec<(String, PathBuf)> {
        self.def
            .get("volumes")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let v = s(v);
                let mut parts = v.split(':');
                let (host, container) = (parts.next()?, parts.next()?);
                host.starts_with("./")
                    .then(|| (container.to_owned(), root().join(&host[2..])))
            })
            .collect()
    }

    /// The repo file behind a path inside the container (through a bind mount of the file
    /// itself or of a folder holding it).
    fn file(&self, in_container: &str) -> PathBuf {
        for (c, host) in self.mounts() {
            if in_container == c {
                return host;
            }
            if let Some(rest) = in_container.strip_prefix(&format!("{c}/")) {
                return host.join(rest);
            }
        }
        panic!(
            "service {}: {in_container} is not in any bind mount: {:?}",
            self.name,
            self.mounts()
        )
    }

    fn args(&self) -> Vec<String> {
        self.def
            .get("command")
            .and_then(Yaml::as_sequence)
            .map(|c| c.iter().map(|a| s(a).to_owned()).collect())
            .unwrap_or_default()
    }

    /// The value of `--flag VALUE` or `--flag=VALUE` in the command.
    fn arg(&self, flag: &str) -> Option<String> {
        let args = self.args();
        args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{flag}=")).map(str::to_owned)
            }
        })
    }

    /// The service's environment, substituted from `.env.example`.
    fn env(&self, dotenv: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.def
            .get("environment")
            .and_then(Yaml::as_mapping)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(t) => t.clone(),
                    other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                };
                (s(k).to_owned(), substitute(&v, dotenv))
            })
            .collect()
    }
}

fn compose() -> (String, BTreeMap<String, Service>) {
    let text = read("docker-compose.yml");
    let doc: Yaml = serde_norway::from_str(&text).expect("docker-compose.yml is YAML");
    let services = doc["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| {
            let name = s(k).to_owned();
            (
                name.clone(),
                Service {
                    name,
                    def: v.clone(),
                },
            )
        })
        .collect();
    (text, services)
}

/// `http://host:port/...` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    let port = uri
        .port_u16()
        .unwrap_or_else(|| panic!("{url} names no port"));
    (uri.host().unwrap().to_owned(), port)
}

#[derive(Deserialize)]
struct Endpoint {
    endpoint: String,
}

#[derive(Deserialize)]
struct Url {
    url: String,
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct OtlpListeners {
    grpc: String,
    http: String,
}

/// Acceptance 1.
#[test]
fn compose_provisioning_and_dashboards_agree_with_the_mounted_config() {
    let (text, services) = compose();
    let dotenv = env_example();
    let service = |name: &str| {
        services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    };

    // Images pinned to a version.
    for svc in services.values() {
        let image = s(svc.def.get("image").unwrap_or_else(|| {
            panic!("service {} has no image", svc.name);
        }));
        let (_, tag) = image
            .rsplit_once(':')
            .filter(|(name, _)| !name.is_empty())
            .unwrap_or_else(|| panic!("service {}: image {image} has no tag", svc.name));
        assert!(
            tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()) || tag == "local",
            "service {}: image {image} is not pinned to a version",
            svc.name
        );
    }
    assert!(
        service("tradewatch").def.get("build").is_some(),
        "tradewatch is built from the Dockerfile"
    );

    // Every bind-mounted file or folder exists.
    for svc in services.values() {
        for (c, host) in svc.mounts() {
            assert!(
                host.exists(),
                "service {} mounts {} at {c}: missing",
                svc.name,
                host.display()
            );
        }
    }

    // Every ${VAR} is defined in .env.example, and secrets come only from it.
    let mut used = compose_vars(&text);
    if let Some(secrets) = serde_norway::from_str::<Yaml>(&text).unwrap()["secrets"].as_mapping() {
        for def in secrets.values() {
            if let Some(var) = def.get("environment") {
                used.insert(s(var).to_owned());
            }
        }
    }
    for var in &used {
        assert!(
            dotenv.contains_key(var),
            "docker-compose.yml uses ${{{var}}}, which .env.example does not define"
        );
    }
    for (svc, key) in [
        ("grafana", "GF_SECURITY_ADMIN_PASSWORD"),
        ("freqtrade", "FREQTRADE__API_SERVER__PASSWORD"),
        ("freqtrade", "FREQTRADE__API_SERVER__JWT_SECRET_KEY"),
        ("tradewatch", "FT_PASS"),
    ] {
        let raw = service(svc).def["environment"][key].as_str().unwrap_or("");
        assert!(
            raw.starts_with("${") && raw.ends_with('}'),
            "{svc}: {key} must come from .env ({raw:?})"
        );
    }

    // The tradewatch config compose mounts, loaded as the container would load it.
    let tw = service("tradewatch");
    let config_path = tw.arg("--config").expect("tradewatch runs --config FILE");
    let config_file = tw.file(&config_path);
    assert_eq!(config_file, root().join("pipelines/local-stack.toml"));
    let tw_env = tw.env(&dotenv);
    let src = Source::from_text(
        config_file.display().to_string(),
        &std::fs::read_to_string(&config_file).unwrap(),
        &|k| tw_env.get(k).cloned(),
    )
    .unwrap_or_else(|e| panic!("local-stack.toml in compose's environment:\n{e}"));
    let cfg = Config::from_source(&src, &tradewatch::registry::builtin())
        .unwrap_or_else(|e| panic!("local-stack.toml does not validate:\n{e}"));
    let id = |s: &str| ComponentId::parse(s).unwrap();
    let tw_ports = tw.ports();

    // The service port: /health for the healthchecks, /metrics for Prometheus.
    let service_addr = cfg.service.http.expect("[service] http");
    assert!(
        service_addr.ip().is_unspecified(),
        "the service port must face the container network: {service_addr}"
    );
    let health = service_addr.port();
    assert!(tw_ports.contains(&health), "compose publishes {health}");
    let hc: Vec<String> = tw.def["healthcheck"]["test"]
        .as_sequence()
        .expect("tradewatch healthcheck")
        .iter()
        .map(|a| s(a).to_owned())
        .collect();
    let hc_url = hc
        .iter()
        .skip_while(|a| *a != "--url")
        .nth(1)
        .expect("healthcheck --url");
    assert_eq!(hc_url, &format!("http://127.0.0.1:{health}/health"));
    let dockerfile = read("Dockerfile");
    let hc_line = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .expect("a HEALTHCHECK in the Dockerfile");
    assert!(
        hc_line.contains(&format!("\"http://127.0.0.1:{health}/health\"")),
        "the Dockerfile's HEALTHCHECK probes the service port {health}: {hc_line}"
    );
    for port in [4317, 4318, 9464, health] {
        assert!(
            dockerfile.contains(&format!(" {port}")),
            "the Dockerfile EXPOSEs {port}"
        );
    }

    // OTLP in: what compose publishes.
    let otlp: OtlpListeners = component_config(&src, Kind::Receiver, &id("otlp")).unwrap();
    for addr in [otlp.grpc, otlp.http] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert!(addr.ip().is_unspecified(), "OTLP listens on {addr}");
        assert!(tw_ports.contains(&addr.port()), "compose publishes {addr}");
    }

    // The prometheus exporter: exposed, and scraped by deploy/prometheus/prometheus.yml.
    let prom_exp: Endpoint = component_config(&src, Kind::Exporter, &id("prometheus")).unwrap();
    let prom_exp: std::net::SocketAddr = prom_exp.endpoint.parse().unwrap();
    assert!(prom_exp.ip().is_unspecified(), "exporter on {prom_exp}");
    assert!(
        tw_ports.contains(&prom_exp.port()),
        "compose exposes {prom_exp}"
    );
    let prom = service("prometheus");
    let prom_file = prom.file(&prom.arg("--config.file").expect("--config.file"));
    assert_eq!(prom_file, root().join("deploy/prometheus/prometheus.yml"));
    let prom_cfg = yaml_file(&prom_file);
    let mut targets = BTreeMap::new();
    for job in prom_cfg["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().unwrap() {
            for t in sc["targets"].as_sequence().unwrap() {
                targets.insert(s(t).to_owned(), job.clone());
            }
        }
    }
    let exporter_target = format!("tradewatch:{}", prom_exp.port());
    let service_target = format!("tradewatch:{health}");
    assert_eq!(
        targets.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([exporter_target.clone(), service_target.clone()]),
        "Prometheus scrapes the exporter and the service port"
    );
    assert_eq!(
        targets[&exporter_target]["honor_labels"].as_bool(),
        Some(true),
        "the exporter's job/instance labels are kept"
    );
    assert_eq!(
        targets[&service_target]["metrics_path"]
            .as_str()
            .unwrap_or("/metrics"),
        "/metrics"
    );
    for glob in prom_cfg["rule_files"].as_sequence().into_iter().flatten() {
        let dir = prom.file(s(glob).rsplit_once('/').unwrap().0);
        let rules: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .collect();
        assert!(!rules.is_empty(), "{} holds the rules", dir.display());
    }
    for am in prom_cfg["alerting"]["alertmanagers"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for sc in am["static_configs"].as_sequence().unwrap() {
            for t in sc["targets"].as_sequence().unwrap() {
                let (host, port) = s(t).split_once(':').unwrap();
                assert!(
                    service(host).ports().contains(&port.parse().unwrap()),
                    "{t:?}"
                );
            }
        }
    }

    // Traces to Jaeger.
    let jaeger: Endpoint = component_config(&src, Kind::Exporter, &id("otlp/jaeger")).unwrap();
    let (host, port) = host_port(&jaeger.endpoint);
    assert_eq!(
        host, "jaeger",
        "the otlp exporter sends to the jaeger service"
    );
    assert!(
        service("jaeger").ports().contains(&port),
        "jaeger exposes {port}"
    );
    assert!(
        s(&service("jaeger").def["image"]).starts_with("jaegertracing/jaeger:2."),
        "Jaeger v2"
    );
    // tradewatch's own spans go to the same Jaeger, so the alerts' trace ids resolve there.
    let own = cfg
        .service
        .telemetry
        .endpoint()
        .expect("[service.telemetry] traces_endpoint is set");
    assert_eq!(
        host_port(own),
        (host, port),
        "tradewatch's own spans go where the otlp exporter sends"
    );

    // Alerts to Alertmanager.
    let am: Endpoint = component_config(&src, Kind::Exporter, &id("alertmanager")).unwrap();
    let (host, port) = host_port(&am.endpoint);
    assert_eq!(host, "alertmanager");
    let am_svc = service("alertmanager");
    assert!(
        am_svc.ports().contains(&port),
        "alertmanager exposes {port}"
    );
    let am_file = am_svc.file(&am_svc.arg("--config.file").expect("--config.file"));
    assert_eq!(am_file, root().join("deploy/alertmanager/alertmanager.yml"));
    let am_cfg = yaml_file(&am_file);
    for recv in am_cfg["receivers"].as_sequence().unwrap() {
        for slack in recv["slack_configs"].as_sequence().into_iter().flatten() {
            let secret = s(&slack["api_url_file"]);
            let name = secret
                .strip_prefix("/run/secrets/")
                .expect("a compose secret");
            assert!(
                am_svc.def["secrets"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str() == Some(name)),
                "alertmanager gets the {name} secret"
            );
        }
    }

    // The bot: the freqtrade service's API, with the same login as the receiver's.
    let ft: Url = component_config(&src, Kind::Receiver, &id("freqtrade/bot")).unwrap();
    let (host, port) = host_port(&ft.url);
    assert_eq!(host, "freqtrade");
    let ft_svc = service("freqtrade");
    let ft_cfg_file = ft_svc.file(&ft_svc.arg("--config").expect("freqtrade --config"));
    assert_eq!(ft_cfg_file, root().join("deploy/freqtrade/config.json"));
    let ft_cfg: Json = serde_json::from_str(&std::fs::read_to_string(&ft_cfg_file).unwrap())
        .expect("deploy/freqtrade/config.json is JSON");
    let api = &ft_cfg["api_server"];
    assert_eq!(api["enabled"], true);
    assert_eq!(api["listen_port"].as_u64(), Some(u64::from(port)));
    assert_eq!(api["listen_ip_address"], "0.0.0.0");
    assert_eq!(ft_cfg["dry_run"], true, "the compose bot trades on paper");
    for key in ["password", "jwt_secret_key", "ws_token"] {
        assert_eq!(
            api[key], "",
            "config.json holds no {key}: it comes from .env"
        );
    }
    assert!(ft_svc.ports().contains(&port));
    let ft_env = ft_svc.env(&dotenv);
    assert_eq!(ft_env["FREQTRADE__API_SERVER__USERNAME"], ft.username);
    assert_eq!(ft_env["FREQTRADE__API_SERVER__PASSWORD"], ft.password);
    assert!(
        ft_env["FREQTRADE__API_SERVER__JWT_SECRET_KEY"].len() >= 32,
        "Freqtrade wants a JWT secret of 32 characters or more"
    );
    let strategy = ft_svc.arg("--strategy").expect("--strategy");
    let strategies = ft_svc.file("/freqtrade/user_data/strategies");
    let found = std::fs::read_dir(&strategies)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .any(|py| py.contains(&format!("class {strategy}(")));
    assert!(found, "{strategy} is in {}", strategies.display());

    // Grafana: provisioning folders, datasources (hosts and ports), dashboards.
    let graf = service("grafana");
    let ds_dir = graf.file("/etc/grafana/provisioning/datasources");
    let mut uids = BTreeSet::new();
    for f in yaml_files(&ds_dir) {
        for ds in yaml_file(&f)["datasources"].as_sequence().unwrap() {
            uids.insert(s(&ds["uid"]).to_owned());
            let (host, port) = host_port(s(&ds["url"]));
            assert!(
                service(&host).ports().contains(&port),
                "datasource {}: {host} does not serve {port}",
                s(&ds["name"])
            );
            if let Some(dest) = ds["jsonData"]["exemplarTraceIdDestinations"].as_sequence() {
                for d in dest {
                    uids.insert(format!("ref:{}", s(&d["datasourceUid"])));
                }
            }
        }
    }
    for r in uids.clone().iter().filter_map(|u| u.strip_prefix("ref:")) {
        assert!(uids.contains(r), "exemplar link to unknown datasource {r}");
    }
    let db_dir = graf.file("/etc/grafana/provisioning/dashboards");
    let providers = yaml_files(&db_dir);
    assert!(!providers.is_empty(), "a dashboard provider");
    let mut dashboards = Vec::new();
    for f in providers {
        for p in yaml_file(&f)["providers"].as_sequence().unwrap() {
            let dir = graf.file(s(&p["options"]["path"]));
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "json") {
                    dashboards.push(path);
                }
            }
        }
    }
    let home = graf.env(&dotenv)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert!(graf.file(&home).exists(), "the home dashboard {home}");
    let titles: BTreeSet<String> = dashboards
        .iter()
        .map(|p| dashboard(p)["title"].as_str().unwrap().to_owned())
        .collect();
    for want in ["Trading overview", "Risk", "Collector health"] {
        assert!(titles.contains(want), "a {want:?} dashboard: {titles:?}");
    }
    let mut dash_uids = BTreeSet::new();
    for path in &dashboards {
        let d = dashboard(path);
        assert!(
            dash_uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "dashboard uids are unique"
        );
        let mut refs = Vec::new();
        datasource_uids(&d, &mut refs);
        assert!(!refs.is_empty(), "{}: no datasource", path.display());
        for u in refs {
            assert!(
                // "-- Grafana --": Grafana's built-in annotations source.
                uids.contains(&u) || u == "-- Grafana --",
                "{}: datasource uid {u} is not provisioned ({uids:?})",
                path.display()
            );
        }
    }
    // The Traces link: a bot's panels open Jaeger by trace id.
    let links = dashboards
        .iter()
        .map(|p| dashboard(p).to_string())
        .filter(|t| t.contains("tw-jaeger") && t.contains("trace_id"))
        .count();
    assert!(links > 0, "a panel links to Jaeger by trace id");
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    v.sort();
    v
}

fn dashboard(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `"datasource": {"uid": …}` in a dashboard.
fn datasource_uids(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                if k == "datasource" || k == "datasourceUid" {
                    if let Some(u) = x.get("uid").and_then(Json::as_str).or(x.as_str()) {
                        out.push(u.to_owned());
                    }
                }
                datasource_uids(x, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|x| datasource_uids(x, out)),
        _ => {}
    }
}

/// promtool and amtool accept what the stack ships.
#[test]
fn promtool_and_amtool_accept_the_shipped_files() {
    let promtool = common::promtool();
    let check = |args: &[&str], bin: &Path| {
        let out = std::process::Command::new(bin)
            .args(args)
            .current_dir(root())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(
            out.status.success(),
            "{} {args:?}:\n{}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        &promtool,
    );
    let rules: Vec<String> = yaml_files(&root().join("deploy/prometheus/rules"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(!rules.is_empty());
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    check(&args, &promtool);
    let amtool = promtool.with_file_name("amtool");
    let amtool = if amtool.exists() {
        amtool
    } else {
        "amtool".into()
    };
    check(
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
        &amtool,
    );
}

/// Every PromQL expression in the dashboards (panel targets and query variables), with
/// Grafana's variables made concrete: `$__rate_interval` and friends become durations,
/// template variables (only ever used in `=~` matchers) match everything.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let d = dashboard(&path);
        let title = d["title"].as_str().unwrap().to_owned();
        let mut panels = Vec::new();
        collect_panels(&d["panels"], &mut panels);
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        format!("{title} / {}", p["title"].as_str().unwrap_or("?")),
                        concrete(expr),
                    ));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            if let (Some("query"), Some(q)) = (v["type"].as_str(), q) {
                // label_values(metric, label): the metric has that label.
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{title}: variable query {q}"));
                let (metric, label) = inner.rsplit_once(',').unwrap();
                out.push((
                    format!("{title} / variable {}", v["name"]),
                    concrete(&format!("count by ({}) ({})", label.trim(), metric.trim())),
                ));
            }
        }
    }
    out
}

fn collect_panels(v: &Json, out: &mut Vec<Json>) {
    for p in v.as_array().into_iter().flatten() {
        out.push(p.clone());
        collect_panels(&p["panels"], out);
    }
}

fn concrete(expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("${__interval}", "15s")
        .replace("$__range", "5m")
        .replace("${__range}", "5m");
    // Template variables: `=~"$bot"` → every bot.
    while let Some(i) = e.find('$') {
        let rest = &e[i + 1..];
        let len = if let Some(r) = rest.strip_prefix('{') {
            r.find('}').expect("closing }") + 2
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .count()
        };
        e.replace_range(i..i + 1 + len, ".*");
    }
    e
}

/// Acceptance 2: no panel shows "No data" because of a wrong name.
#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_demo() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboards' queries: {queries:?}");
    let (svc, exporter) = (common::free_port(), common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let demo = common::Demo::start(
        dir.path(),
        &[
            "--interval".into(),
            "1s".into(),
            "--for".into(),
            "600s".into(),
            "--drawdown-ramp".into(),
            "20s".into(),
            "--service".into(),
            format!("127.0.0.1:{svc}"),
            "--prometheus".into(),
            format!("127.0.0.1:{exporter}"),
        ],
    );
    let demo_log = || demo.logs();
    let service = std::net::SocketAddr::from(([127, 0, 0, 1], svc));
    common::eventually(Duration::from_secs(30), "the demo runs", || {
        common::http_get(service, "/health").is_ok_and(|(c, b)| c == 200 && b.contains("running"))
    });

    // The shipped scrape configuration, pointed at the demo and scraping every second.
    let mut cfg = yaml_file(&root().join("deploy/prometheus/prometheus.yml"));
    cfg["global"]["scrape_interval"] = Yaml::from("1s");
    let map = cfg.as_mapping_mut().unwrap();
    map.remove("rule_files");
    map.remove("alerting");
    for job in cfg["scrape_configs"].as_sequence_mut().unwrap() {
        for sc in job["static_configs"].as_sequence_mut().unwrap() {
            for t in sc["targets"].as_sequence_mut().unwrap() {
                let port = match t.as_str().unwrap() {
                    "tradewatch:9464" => exporter,
                    "tradewatch:13133" => svc,
                    other => panic!("unexpected target {other}"),
                };
                *t = Yaml::from(format!("127.0.0.1:{port}"));
            }
        }
    }
    let mut prom = Prometheus::start_with_config(&serde_norway::to_string(&cfg).unwrap());

    // About a minute of data, and every query must have answered at least once (polled
    // until a deadline). Once: the demo bot is paused at its breach and its open trades
    // close one by one, after which the per-trade panels rightly show nothing.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(180);
    let mut answered = vec![false; queries.len()];
    let mut last_error: BTreeMap<usize, String> = BTreeMap::new();
    loop {
        assert!(prom.running(), "Prometheus exited:\n{}", prom.log());
        for (i, (_, q)) in queries.iter().enumerate() {
            if answered[i] {
                continue;
            }
            match prom.query_raw(q) {
                Ok(v)
                    if v["data"]["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty()) =>
                {
                    answered[i] = true;
                    last_error.remove(&i);
                }
                Ok(_) => {
                    last_error.insert(i, "no data".into());
                }
                Err(e) => {
                    last_error.insert(i, e);
                }
            }
        }
        let missing: Vec<String> = queries
            .iter()
            .enumerate()
            .filter(|(i, _)| !answered[*i])
            .map(|(i, (panel, q))| {
                format!("{panel}: {q}  ({})", last_error.get(&i).map_or("?", |e| e))
            })
            .collect();
        if missing.is_empty() && start.elapsed() >= Duration::from_secs(60) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} dashboard queries returned no data in {:?}:\n  {}\n\ndemo log tail:\n{}",
            missing.len(),
            queries.len(),
            start.elapsed(),
            missing.join("\n  "),
            demo_log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}
