//! `tradewatch validate`: every broken configuration in a table is refused with
//! `file:line:column: key: message` pointing at the mistake, nothing is started, and a
//! valid file is accepted.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `validate` should point: the first line of the config containing `at`.
/// Placeholders `{GRPC}`, `{HTTP}` and `{SERVICE}` are replaced by free ports.
struct Case {
    name: &'static str,
    /// `None`: the file does not exist.
    config: Option<String>,
    /// Text on the offending line ("" for "no line": a missing file).
    at: &'static str,
    /// The full dotted key, as the `key` slot of the error line.
    key: &'static str,
    /// A fragment of the message.
    message: &'static str,
}

const OTLP_IN: &str = r#"[receivers.otlp]
grpc = "127.0.0.1:{GRPC}"
http = "127.0.0.1:{HTTP}"
"#;

const FILE_OUT: &str = r#"[exporters.file]
path = "out/telemetry.jsonl"
"#;

const SERVICE: &str = r#"[service]
http = "127.0.0.1:{SERVICE}"
data_dir = "data"
"#;

const TRACES: &str = r#"[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
"#;

const OTLP_TRACES: &str = r#"[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp"]
"#;

const RISK_METRICS: &str = r#"[service.pipelines.metrics]
receivers = ["otlp"]
processors = ["risk"]
exporters = ["file"]
"#;

const CW_METRICS: &str = r#"[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["cloudwatch"]
"#;

const EMF_METRICS: &str = r#"[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["cloudwatch_emf"]
"#;

fn cat(parts: &[&str]) -> Option<String> {
    Some(parts.join("\n"))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "unknown top-level table",
            config: cat(&[OTLP_IN, FILE_OUT, "[extensions]\nzpages = \"127.0.0.1:55679\"\n", SERVICE, TRACES]),
            at: "[extensions]",
            key: "extensions",
            message: "unknown field `extensions`, expected one of `receivers`, `processors`, `exporters`, `service`",
        },
        Case {
            name: "unknown top-level table written as a sub-table",
            config: cat(&[OTLP_IN, FILE_OUT, "[extensions.zpages]\nendpoint = \"127.0.0.1:55679\"\n", SERVICE, TRACES]),
            at: "[extensions.zpages]",
            key: "extensions",
            message: "unknown field `extensions`, expected one of `receivers`, `processors`, `exporters`, `service`",
        },
        Case {
            name: "a receiver that cannot take the pipeline's signal",
            config: cat(&[
                OTLP_IN,
                "[receivers.alerts]\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\", \"alerts\"]\nexporters = [\"file\"]\n",
            ]),
            at: "receivers = [\"otlp\", \"alerts\"]",
            key: "service.pipelines.traces.receivers",
            message: "receiver \"alerts\" cannot take traces (it handles: logs)",
        },
        Case {
            name: "unknown top-level key",
            config: cat(&["extensions = 1\n", OTLP_IN, FILE_OUT, SERVICE, TRACES]),
            at: "extensions = 1",
            key: "extensions",
            message: "unknown field `extensions`",
        },
        Case {
            name: "unknown key inside a component",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\nendpiont = \"http://127.0.0.1:14318\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "endpiont",
            key: "exporters.\"otlp/jaeger\".endpiont",
            message: "unknown field `endpiont`, expected one of `endpoint`",
        },
        Case {
            name: "unknown key in a component's sub-table",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".retry_on_failure]\nenabled = true\nmax_elapsed = \"5m\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "max_elapsed =",
            key: "exporters.\"otlp/jaeger\".retry_on_failure.max_elapsed",
            message: "unknown field `max_elapsed`",
        },
        Case {
            name: "unknown key in [service]",
            config: cat(&[OTLP_IN, FILE_OUT, "[service]\nhtp = \"127.0.0.1:{SERVICE}\"\n", TRACES]),
            at: "htp =",
            key: "service.htp",
            message: "unknown field `htp`",
        },
        Case {
            name: "unknown key in a pipeline",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\nexporter = [\"file\"]\n"]),
            at: "exporter =",
            key: "service.pipelines.traces.exporter",
            message: "unknown field `exporter`",
        },
        Case {
            name: "unknown component type",
            config: cat(&[
                OTLP_IN,
                "[exporters.kafka]\nbrokers = [\"127.0.0.1:9092\"]\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"kafka\"]\n",
            ]),
            at: "[exporters.kafka]",
            key: "exporters.kafka",
            message: "unknown exporter type \"kafka\" (known types: otlp, file, debug, nop",
        },
        Case {
            name: "dangling receiver reference",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, "[service.pipelines.traces]\nreceivers = [\"otlp\", \"zipkin\"]\nexporters = [\"file\"]\n"]),
            at: "\"zipkin\"",
            key: "service.pipelines.traces.receivers",
            message: "pipeline traces references receiver \"zipkin\", which is not declared",
        },
        Case {
            name: "dangling exporter reference",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"file\", \"otlp/tempo\"]\n"]),
            at: "\"otlp/tempo\"",
            key: "service.pipelines.traces.exporters",
            message: "references exporter \"otlp/tempo\", which is not declared: add a [exporters.\"otlp/tempo\"] table",
        },
        Case {
            name: "pipeline without receivers",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, TRACES, "[service.pipelines.metrics]\nexporters = [\"file\"]\n"]),
            at: "[service.pipelines.metrics]",
            key: "service.pipelines.metrics.receivers",
            message: "pipeline metrics has no receivers",
        },
        Case {
            name: "pipeline without exporters",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, TRACES, "[service.pipelines.\"logs/audit\"]\nreceivers = [\"otlp\"]\n"]),
            at: "[service.pipelines.\"logs/audit\"]",
            key: "service.pipelines.\"logs/audit\".exporters",
            message: "pipeline logs/audit has no exporters",
        },
        Case {
            name: "zero pipeline capacity",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, TRACES, "capacity = 0\n"]),
            at: "capacity = 0",
            key: "service.pipelines.traces.capacity",
            message: "capacity must be at least 1",
        },
        Case {
            name: "bad duration",
            config: cat(&[
                OTLP_IN,
                "[processors.batch]\nsend_batch_size = 512\ntimeout = \"5x\"\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"file\"]\n",
            ]),
            at: "timeout = \"5x\"",
            key: "processors.batch.timeout",
            message: "invalid duration \"5x\"",
        },
        Case {
            name: "bad size",
            config: cat(&[OTLP_IN, "max_request_size = \"lots\"\n", FILE_OUT, SERVICE, TRACES]),
            at: "max_request_size",
            key: "receivers.otlp.max_request_size",
            message: "invalid size \"lots\"",
        },
        Case {
            name: "size below the minimum",
            config: cat(&[OTLP_IN, "max_request_size = \"512B\"\n", FILE_OUT, SERVICE, TRACES]),
            at: "max_request_size",
            key: "receivers.otlp.max_request_size",
            message: "max_request_size must be at least 1KiB",
        },
        Case {
            name: "wrong type",
            config: cat(&[
                OTLP_IN,
                "[processors.batch]\nsend_batch_size = \"big\"\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"file\"]\n",
            ]),
            at: "send_batch_size",
            key: "processors.batch.send_batch_size",
            message: "invalid type: string \"big\", expected u64",
        },
        Case {
            name: "bad receiver listen address",
            config: cat(&["[receivers.otlp]\ngrpc = \"localhost\"\nhttp = \"127.0.0.1:{HTTP}\"\n", FILE_OUT, SERVICE, TRACES]),
            at: "grpc = \"localhost\"",
            key: "receivers.otlp.grpc",
            message: "invalid listen address \"localhost\"",
        },
        Case {
            name: "bad service listen address",
            config: cat(&[OTLP_IN, FILE_OUT, "[service]\nhttp = \"nowhere:13133\"\n", TRACES]),
            at: "nowhere",
            key: "service.http",
            message: "invalid listen address \"nowhere:13133\"",
        },
        Case {
            name: "unset ${VAR} without a default",
            config: cat(&[OTLP_IN, "auth_token = \"${TW_VALIDATE_TEST_UNSET}\"\n", FILE_OUT, SERVICE, TRACES]),
            at: "auth_token",
            key: "receivers.otlp.auth_token",
            message: "environment variable TW_VALIDATE_TEST_UNSET is not set",
        },
        Case {
            name: "invalid pipeline name",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, "[service.pipelines.spans]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n"]),
            at: "[service.pipelines.spans]",
            key: "service.pipelines.spans",
            message: "invalid pipeline name \"spans\": it must start with traces, metrics or logs",
        },
        Case {
            name: "bad endpoint URL",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"127.0.0.1:14317\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "endpoint =",
            key: "exporters.\"otlp/jaeger\".endpoint",
            message: "invalid endpoint \"127.0.0.1:14317\"",
        },
        Case {
            name: "zero sending queue",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".sending_queue]\nqueue_size = 0\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "queue_size = 0",
            key: "exporters.\"otlp/jaeger\".sending_queue.queue_size",
            message: "queue_size must be at least 1",
        },
        Case {
            name: "TOML syntax error",
            config: cat(&["[receivers.otlp]\ngrpc = \"127.0.0.1:{GRPC}\"\nhttp = \"127.0.0.1:{HTTP}\n", FILE_OUT, SERVICE, TRACES]),
            at: "http = \"127.0.0.1:",
            key: "receivers.otlp.http",
            message: "invalid basic string",
        },
        Case {
            name: "unknown key in a sub-table of a short-named component",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/j\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/j\".sending_queue]\nqueue_size = 8\nnum_consumerz = 2\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/j\"]\n",
            ]),
            at: "num_consumerz",
            key: "exporters.\"otlp/j\".sending_queue.num_consumerz",
            message: "unknown field `num_consumerz`, expected one of `queue_size`, `num_consumers`, `on_full`",
        },
        Case {
            name: "unknown key in an inline table",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\nretry_on_failure = { enabled = true, max_elapsed = \"5m\" }\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "retry_on_failure =",
            key: "exporters.\"otlp/jaeger\".retry_on_failure.max_elapsed",
            message: "unknown field `max_elapsed`",
        },
        Case {
            name: "zero consumers",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".sending_queue]\nqueue_size = 8\nnum_consumers = 0\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "num_consumers = 0",
            key: "exporters.\"otlp/jaeger\".sending_queue.num_consumers",
            message: "num_consumers must be at least 1",
        },
        Case {
            name: "zero sending queue in an inline table",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\nsending_queue = { queue_size = 0 }\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "sending_queue = {",
            key: "exporters.\"otlp/jaeger\".sending_queue.queue_size",
            message: "queue_size must be at least 1",
        },
        Case {
            name: "zero consumers as a dotted key",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\nsending_queue.num_consumers = 0\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "sending_queue.num_consumers",
            key: "exporters.\"otlp/jaeger\".sending_queue.num_consumers",
            message: "num_consumers must be at least 1",
        },
        Case {
            name: "retry interval larger than its maximum",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".retry_on_failure]\ninitial_interval = \"10s\"\nmax_interval = \"1s\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "initial_interval =",
            key: "exporters.\"otlp/jaeger\".retry_on_failure.initial_interval",
            message: "initial_interval is larger than max_interval",
        },
        Case {
            name: "zero exporter timeout",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\ntimeout = \"0s\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "timeout = \"0s\"",
            key: "exporters.\"otlp/jaeger\".timeout",
            message: "timeout must be more than 0s",
        },
        Case {
            name: "zero capacity of a pipeline in the middle",
            config: cat(&[
                OTLP_IN,
                FILE_OUT,
                SERVICE,
                "[service.pipelines.\"logs/audit\"]\nreceivers = [\"otlp\"]\ncapacity = 0\nexporters = [\"file\"]\n",
                TRACES,
            ]),
            at: "capacity = 0",
            key: "service.pipelines.\"logs/audit\".capacity",
            message: "capacity must be at least 1",
        },
        Case {
            name: "unset ${VAR} in a sub-table",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".headers]\n\"x-api-key\" = \"${TW_VALIDATE_TEST_UNSET}\"\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "x-api-key",
            key: "exporters.\"otlp/jaeger\".headers.\"x-api-key\"",
            message: "environment variable TW_VALIDATE_TEST_UNSET is not set",
        },
        Case {
            name: "TOML syntax error in [service]",
            config: cat(&[OTLP_IN, FILE_OUT, "[service]\nhttp = 127.0.0.1\n", TRACES]),
            at: "http = 127",
            key: "service.http",
            message: "invalid float",
        },
        Case {
            name: "no pipelines",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE]),
            at: "[service]",
            key: "service.pipelines",
            message: "no pipelines: declare at least one",
        },
        Case {
            name: "wrong type in a multi-line array",
            config: cat(&[
                OTLP_IN,
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\n  \"otlp\",\n  5,\n]\nexporters = [\"file\"]\n",
            ]),
            at: "  5,",
            key: "service.pipelines.traces.receivers",
            message: "invalid type: integer `5`, expected a string",
        },
        Case {
            name: "missing file",
            config: None,
            at: "",
            key: "",
            message: "cannot read the configuration file: No such file or directory",
        },
        Case {
            name: "wrong type inside an inline table",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\nheaders = { \"x-api-key\" = 5 }\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "headers = {",
            key: "exporters.\"otlp/jaeger\".headers.\"x-api-key\"",
            message: "invalid type: integer `5`, expected a string",
        },
        Case {
            name: "a component written as an inline table",
            config: cat(&[
                OTLP_IN,
                "[exporters]\n\"otlp/j\" = { endpoint = 5, timeout = \"5x\" }\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/j\"]\n",
            ]),
            at: "endpoint = 5",
            key: "exporters.\"otlp/j\".endpoint",
            message: "invalid type: integer `5`, expected a string",
        },
        Case {
            name: "a component that is not a table",
            config: cat(&[OTLP_IN, "[exporters]\nfile = 5\n", SERVICE, TRACES]),
            at: "file = 5",
            key: "exporters.file",
            message: "invalid type: integer `5`, expected struct FileConfig",
        },
        Case {
            name: "a whole ${VAR} that does not parse as the field's type",
            config: cat(&[
                OTLP_IN,
                "[processors.batch]\nsend_batch_size = \"${TW_VALIDATE_TEST_UNSET:-lots}\"\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"file\"]\n",
            ]),
            at: "send_batch_size",
            key: "processors.batch.send_batch_size",
            message: "the value of ${TW_VALIDATE_TEST_UNSET} is not u64",
        },
        Case {
            name: "bad ${VAR} name",
            config: cat(&[OTLP_IN, FILE_OUT, "[service]\nhttp = \"${9LIVES}\"\n", TRACES]),
            at: "9LIVES",
            key: "service.http",
            message: "invalid environment variable name \"9LIVES\"",
        },
        Case {
            name: "unterminated ${",
            config: cat(&[OTLP_IN, FILE_OUT, SERVICE, "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"${TW_VALIDATE_TEST_UNSET:-file\"]\n"]),
            at: "${TW_VALIDATE",
            key: "service.pipelines.traces.exporters",
            message: "unterminated ${...}",
        },
        Case {
            name: "critical that is not a bool",
            config: cat(&[OTLP_IN, "critical = \"yes\"\n", FILE_OUT, SERVICE, TRACES]),
            at: "critical",
            key: "receivers.otlp.critical",
            message: "invalid type: string \"yes\", expected a boolean",
        },
        Case {
            name: "critical in a component's sub-table is that sub-table's unknown key",
            config: cat(&[
                OTLP_IN,
                "[exporters.\"otlp/jaeger\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
                "[exporters.\"otlp/jaeger\".sending_queue]\ncritical = true\n",
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp/jaeger\"]\n",
            ]),
            at: "critical = true",
            key: "exporters.\"otlp/jaeger\".sending_queue.critical",
            message: "unknown field `critical`",
        },
        Case {
            name: "an attributes action that does not exist",
            config: cat(&[
                OTLP_IN,
                "[processors.\"attributes/scrub\"]\nactions = [\n  { key = \"user.email\", action = \"hash\" },\n  { key = \"bot\", value = \"x\", action = \"rename\" },\n]\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"attributes/scrub\"]\nexporters = [\"file\"]\n",
            ]),
            at: "action = \"rename\"",
            key: "processors.\"attributes/scrub\".actions[1].action",
            message: "unknown action \"rename\" (known actions: insert, update, upsert, delete, hash)",
        },
        Case {
            name: "an attributes drop rule with a broken regular expression",
            config: cat(&[
                OTLP_IN,
                "[processors.attributes]\ndrop = [\n  { key = \"http.target\", matches = '^/(health' },\n]\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"attributes\"]\nexporters = [\"file\"]\n",
            ]),
            at: "matches = '^/(health'",
            key: "processors.attributes.drop[0].matches",
            message: "invalid regular expression",
        },
        Case {
            name: "a trace_enrich resource trace id that is not one",
            config: cat(&[
                OTLP_IN,
                "[processors.trace_enrich]\nresource_attributes = { trace_id = \"${TW_VALIDATE_TEST_UNSET:-not-an-id}\" }\n",
                FILE_OUT,
                SERVICE,
                "[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"trace_enrich\"]\nexporters = [\"file\"]\n",
            ]),
            at: "resource_attributes",
            key: "processors.trace_enrich.resource_attributes.trace_id",
            message: "not a trace id",
        },
        Case {
            name: "a risk limit outside the deployment bounds",
            config: cat(&[OTLP_IN, "[processors.risk]\nmax_drawdown_pct = 60\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "max_drawdown_pct = 60",
            key: "processors.risk.max_drawdown_pct",
            message: "max_drawdown_pct: 60 is outside the deployment bounds 1..50",
        },
        Case {
            name: "a per-bot risk limit outside its bounds",
            config: cat(&[OTLP_IN, "[processors.risk]\n[processors.risk.bots.main]\nmax_leverage = 11\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "max_leverage = 11",
            key: "processors.risk.bots.main.max_leverage",
            message: "max_leverage: 11 is outside the deployment bounds 1..10",
        },
        Case {
            name: "an unknown breach action",
            config: cat(&[OTLP_IN, "[processors.risk]\naction_on_breach = \"liquidate\"\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "\"liquidate\"",
            key: "processors.risk.action_on_breach",
            message: "unknown action \"liquidate\": use \"pause\", \"stop\" or \"alert_only\"",
        },
        Case {
            name: "an alert rule without the metric it watches",
            config: cat(&[OTLP_IN, "[processors.risk]\n[[processors.risk.rules]]\nname = \"DrawdownHigh\"\ncritical = 8\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "[[processors.risk.rules]]",
            key: "processors.risk.rules[0].metric",
            message: "rule \"DrawdownHigh\": a rule needs the metric it watches",
        },
        Case {
            name: "an alert rule without a name",
            config: cat(&[OTLP_IN, "[processors.risk]\n[[processors.risk.rules]]\nmetric = \"dd\"\ncritical = 8\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "[[processors.risk.rules]]",
            key: "processors.risk.rules.name",
            message: "missing field `name`",
        },
        Case {
            name: "a composite rule combining a rule that does not exist",
            config: cat(&[OTLP_IN, "[processors.risk]\n[[processors.risk.rules]]\nname = \"Dd\"\nmetric = \"dd\"\ncritical = 8\n[[processors.risk.rules]]\nname = \"Any\"\nkind = \"composite\"\nany_of = [\"Dd\", \"Ddd\"]\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "any_of",
            key: "processors.risk.rules[1].any_of",
            message: "\"Ddd\" is not the name of a non-composite rule",
        },
        Case {
            name: "an alert rule whose critical level is easier to reach than its warning",
            config: cat(&[OTLP_IN, "[processors.risk]\n[[processors.risk.rules]]\nname = \"Dd\"\nmetric = \"dd\"\nwarning = 8\ncritical = 5\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "critical = 5",
            key: "processors.risk.rules[0].critical",
            message: "critical 5 is easier to reach than warning 8",
        },
        Case {
            name: "a risk processor controlling a receiver that is not a freqtrade one",
            config: cat(&[OTLP_IN, "[processors.risk]\ncontrol = \"otlp\"\n", FILE_OUT, SERVICE, RISK_METRICS]),
            at: "control",
            key: "processors.risk.control",
            message: "freqtrade",
        },
        Case {
            name: "a health check of an unknown type",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"api\"\ntype = \"htp\"\nurl = \"http://127.0.0.1:8000/health\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "type = \"htp\"",
            key: "receivers.\"healthcheck/deps\".checks[0].type",
            message: "unknown check type \"htp\": use one of http, tcp, redis, postgres, freqtrade, sns, sqs, s3, dynamodb, cloudwatch_logs",
        },
        Case {
            name: "a health check with a bad URL (its password is not repeated)",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"redis\"\ntype = \"redis\"\nurl = \"redis//:hunter2@127.0.0.1:6379\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "url = \"redis//",
            key: "receivers.\"healthcheck/deps\".checks[0].url",
            message: "check \"redis\": bad URL \"***@127.0.0.1:6379\": relative URL without a base",
        },
        Case {
            name: "a health check URL of another scheme than its type's",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"ok\"\ntype = \"http\"\nurl = \"http://127.0.0.1:8000/health\"\n[[receivers.\"healthcheck/deps\".checks]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"mysql://app:pw@127.0.0.1:3306/db\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "url = \"mysql:",
            key: "receivers.\"healthcheck/deps\".checks[1].url",
            message: "the scheme must be postgres:// or postgresql://",
        },
        Case {
            name: "a health check without the key its type needs",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"port\"\ntype = \"tcp\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "type = \"tcp\"",
            key: "receivers.\"healthcheck/deps\".checks[0].address",
            message: "a tcp check needs address (HOST:PORT)",
        },
        Case {
            name: "a health check with a key of another type",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"port\"\ntype = \"tcp\"\naddress = \"127.0.0.1:6379\"\nbody_contains = \"ok\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "body_contains",
            key: "receivers.\"healthcheck/deps\".checks[0].body_contains",
            message: "a tcp check has no key \"body_contains\"",
        },
        Case {
            name: "two health checks with one name",
            config: cat(&[OTLP_IN, HEALTH_IN, "[[receivers.\"healthcheck/deps\".checks]]\nname = \"api\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[receivers.\"healthcheck/deps\".checks]]\nname = 'api'\ntype = \"tcp\"\naddress = \"127.0.0.1:2\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "name = 'api'",
            key: "receivers.\"healthcheck/deps\".checks[1].name",
            message: "two checks are named \"api\"",
        },
        Case {
            name: "a health check alert threshold of 0",
            config: cat(&[OTLP_IN, "[receivers.\"healthcheck/deps\"]\nalert_after = 0\n[[receivers.\"healthcheck/deps\".checks]]\nname = \"api\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n", FILE_OUT, SERVICE, TRACES, HEALTH_METRICS]),
            at: "alert_after = 0",
            key: "receivers.\"healthcheck/deps\".alert_after",
            message: "alert_after = 0 is outside 1..1000",
        },
        Case {
            name: "a CloudWatch storage resolution CloudWatch does not take",
            config: cat(&[OTLP_IN, "[exporters.cloudwatch]\nregion = \"us-east-1\"\nstorage_resolution = 30\n", FILE_OUT, SERVICE, CW_METRICS]),
            at: "storage_resolution = 30",
            key: "exporters.cloudwatch.storage_resolution",
            message: "CloudWatch takes 1 (high resolution) or 60",
        },
        Case {
            name: "a disk queue asked to drop its oldest batches",
            config: cat(&[OTLP_IN, "[exporters.otlp]\nendpoint = \"http://127.0.0.1:4317\"\n[exporters.otlp.sending_queue]\nstorage = \"disk\"\non_full = \"drop_oldest\"\n", SERVICE, OTLP_TRACES]),
            at: "on_full = \"drop_oldest\"",
            key: "exporters.otlp.sending_queue.on_full",
            message: "a disk queue keeps everything and pushes back at max_size",
        },
        Case {
            name: "a disk queue smaller than one segment",
            config: cat(&[OTLP_IN, "[exporters.otlp]\nendpoint = \"http://127.0.0.1:4317\"\n[exporters.otlp.sending_queue]\nstorage = \"disk\"\nmax_size = \"1MiB\"\n", SERVICE, OTLP_TRACES]),
            at: "max_size = \"1MiB\"",
            key: "exporters.otlp.sending_queue.max_size",
            message: "must be at least segment_size",
        },
        Case {
            name: "an unknown queue storage",
            config: cat(&[OTLP_IN, "[exporters.otlp]\nendpoint = \"http://127.0.0.1:4317\"\n[exporters.otlp.sending_queue]\nstorage = \"ssd\"\n", SERVICE, OTLP_TRACES]),
            at: "storage = \"ssd\"",
            key: "exporters.otlp.sending_queue.storage",
            message: "unknown variant `ssd`, expected `memory` or `disk`",
        },
        Case {
            name: "an EMF namespace reserved for AWS",
            config: cat(&[OTLP_IN, "[exporters.cloudwatch_emf]\nnamespace = \"AWS/Lambda\"\n", FILE_OUT, SERVICE, EMF_METRICS]),
            at: "namespace = \"AWS/Lambda\"",
            key: "exporters.cloudwatch_emf.namespace",
            message: "starts with AWS/",
        },
        Case {
            name: "an EMF file destination without a path",
            config: cat(&[OTLP_IN, "[exporters.cloudwatch_emf]\ndestination = \"file\"\n", FILE_OUT, SERVICE, EMF_METRICS]),
            at: "[exporters.cloudwatch_emf]",
            key: "exporters.cloudwatch_emf.path",
            message: "destination = \"file\" needs path",
        },
        Case {
            name: "an unknown key in a CloudWatch exporter",
            config: cat(&[OTLP_IN, "[exporters.cloudwatch]\nregion = \"us-east-1\"\nnamespce = \"x\"\n", FILE_OUT, SERVICE, CW_METRICS]),
            at: "namespce",
            key: "exporters.cloudwatch.namespce",
            message: "unknown key \"namespce\"",
        },
        Case {
            name: "a metric declaration with a unit CloudWatch does not know",
            config: cat(&[OTLP_IN, "[exporters.cloudwatch]\nregion = \"us-east-1\"\n[[exporters.cloudwatch.metrics]]\nmatch = \"healthcheck.latency\"\nunit = \"Millis\"\n", FILE_OUT, SERVICE, CW_METRICS]),
            at: "[[exporters.cloudwatch.metrics]]",
            key: "exporters.cloudwatch.metrics",
            message: "metrics[0].unit: unit \"Millis\" is not a CloudWatch unit",
        },
    ]
}

const HEALTH_IN: &str = r#"[receivers."healthcheck/deps"]
interval = "30s"
"#;

const HEALTH_METRICS: &str = r#"[service.pipelines.metrics]
receivers = ["healthcheck/deps"]
exporters = ["file"]
"#;

struct Ports {
    grpc: u16,
    http: u16,
    service: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            grpc: common::free_port(),
            http: common::free_port(),
            service: common::free_port(),
        }
    }

    fn fill(&self, config: &str) -> String {
        config
            .replace("{GRPC}", &self.grpc.to_string())
            .replace("{HTTP}", &self.http.to_string())
            .replace("{SERVICE}", &self.service.to_string())
    }

    /// Nothing listens on the ports the config names: they can be bound.
    fn assert_free(&self, what: &str) {
        for port in [self.grpc, self.http, self.service] {
            if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
                panic!("{what}: port {port} named in the config is taken after validate: {e}");
            }
        }
    }
}

fn validate(dir: &Path, config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env_remove("TW_VALIDATE_TEST_UNSET")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("TRADEWATCH_LOG", "info")
        .output()
        .expect("run tradewatch validate")
}

/// `file:line:column: key: message` lines of `stderr` for `file`, as (line, key-and-message);
/// `file: message` (about the whole file, no position) as line 0.
fn error_lines<'a>(stderr: &'a str, file: &str) -> Vec<(usize, &'a str)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(file)?;
            if let Some(message) = rest.strip_prefix(": ") {
                return Some((0, message));
            }
            let rest = rest.strip_prefix(':')?;
            let (line, rest) = rest.split_once(':')?;
            let (column, rest) = rest.split_once(": ")?;
            column.parse::<usize>().ok()?;
            Some((line.parse().ok()?, rest))
        })
        .collect()
}

/// Is there an error at `line` whose key slot is exactly `key` and whose message holds
/// `message`? An empty `key`: no key slot, the message comes first.
fn reported(errors: &[(usize, &str)], line: usize, key: &str, message: &str) -> bool {
    errors.iter().any(|(l, rest)| {
        let found = if key.is_empty() {
            rest.starts_with(message)
        } else {
            rest.strip_prefix(key)
                .and_then(|r| r.strip_prefix(": "))
                .is_some_and(|m| m.contains(message))
        };
        *l == line && found
    })
}

fn line_of(config: &str, at: &str) -> usize {
    if at.is_empty() {
        return 0;
    }
    config
        .lines()
        .position(|l| l.contains(at))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{at:?} is not in the config:\n{config}"))
}

/// Only the config file itself: no data dir, no exporter output, nothing else.
fn assert_untouched(dir: &Path, config: Option<&Path>, what: &str) {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read temp dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    let expected: Vec<PathBuf> = config.into_iter().map(Path::to_path_buf).collect();
    assert_eq!(entries, expected, "{what}: validate created files");
}

/// Runs one case; returns a description of what went wrong, if anything.
fn check(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let file_name = format!(
        "{}.toml",
        case.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let path = dir.path().join(file_name);
    let config = case.config.as_deref().map(|c| ports.fill(c));
    if let Some(c) = &config {
        std::fs::write(&path, c).expect("write config");
    }
    let out = validate(dir.path(), &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!(
        "stdout:\n{stdout}\nstderr:\n{stderr}\nconfig:\n{}",
        config.as_deref().unwrap_or("(none)")
    );
    if out.status.code() != Some(1) {
        return Err(format!("exit status {} (want 1)\n{shown}", out.status));
    }
    if stdout.contains("valid") {
        return Err(format!("stdout claims the config is valid\n{shown}"));
    }
    let file = path.display().to_string();
    let errors = error_lines(&stderr, &file);
    let text = config.as_deref().unwrap_or("");
    let line = line_of(text, case.at);
    if stderr.contains(&format!("{file}:0:")) {
        return Err(format!("no position means none printed, not 0:0\n{shown}"));
    }
    if !reported(&errors, line, case.key, case.message) {
        return Err(format!(
            "want an error line `{file}:{line}:<column>: {}: ...{}...`\n{shown}",
            case.key, case.message
        ));
    }
    if errors.len() != 1 {
        return Err(format!("want one error for one mistake\n{shown}"));
    }
    ports.assert_free(case.name);
    assert_untouched(
        dir.path(),
        config.is_some().then_some(path.as_path()),
        case.name,
    );
    Ok(())
}

#[test]
fn each_broken_config_is_refused_with_file_line_and_key() {
    let cases = cases();
    assert!(cases.len() >= 12);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("--- {}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn several_errors_in_one_file_are_all_reported_in_line_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = ports.fill(
        r#"[receivers.otlp]
grpc = "127.0.0.1:{GRPC}"
http = "127.0.0.1:{HTTP}"

[processors.batch]
timeout = "soon"

[exporters."otlp/jaeger"]
endpoint = "http://127.0.0.1:14317"
compresion = "gzip"

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{SERVICE}"
shutdown_timout = "5s"

[service.pipelines.traces]
receivers = ["otlp", "jaeger"]
processors = ["batch"]
exporters = ["file", "otlp/tempo"]

[service.pipelines.events]
receivers = ["otlp"]
exporters = ["file"]
"#,
    );
    let path = dir.path().join("several.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = validate(dir.path(), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors = error_lines(&stderr, &path.display().to_string());
    let want = [
        (6, "processors.batch.timeout", "invalid duration \"soon\""),
        (
            10,
            "exporters.\"otlp/jaeger\".compresion",
            "unknown field `compresion`",
        ),
        (
            17,
            "service.shutdown_timout",
            "unknown field `shutdown_timout`",
        ),
        (
            20,
            "service.pipelines.traces.receivers",
            "references receiver \"jaeger\", which is not declared",
        ),
        (
            22,
            "service.pipelines.traces.exporters",
            "references exporter \"otlp/tempo\", which is not declared",
        ),
        (
            24,
            "service.pipelines.events",
            "invalid pipeline name \"events\"",
        ),
    ];
    assert_eq!(
        errors.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        want.iter().map(|(l, ..)| *l).collect::<Vec<_>>(),
        "one error per mistake, in line order:\n{stderr}"
    );
    for (line, key, message) in want {
        assert!(
            reported(&errors, line, key, message),
            "want line {line} `{key}` `{message}`:\n{stderr}"
        );
    }
    ports.assert_free("several errors");
    assert_untouched(dir.path(), Some(&path), "several errors");
}

#[test]
fn every_mistake_in_one_component_table_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = ports.fill(
        r#"[receivers.otlp]
grpc = "localhost"
http = "127.0.0.1:{HTTP}"
max_request_size = "lots"
wait_for_delivery = "${TW_VALIDATE_TEST_UNSET:-maybe}"

[exporters."otlp/jaeger"]
endpoint = 5
endpiont = "http://127.0.0.1:14317"
compression = 3
timeout = "5x"
retry_on_failure.max_elapsed = "5m"
headers = { "x-api-key" = 5 }
[exporters."otlp/jaeger".retry]
enabled = true
[exporters."otlp/jaeger".sending_queue]
queue_size = "big"

[service]
http = "127.0.0.1:{SERVICE}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp/jaeger"]
"#,
    );
    let path = dir.path().join("many.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = validate(dir.path(), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors = error_lines(&stderr, &path.display().to_string());
    let want = [
        (
            2,
            "receivers.otlp.grpc",
            "invalid listen address \"localhost\"",
        ),
        (
            4,
            "receivers.otlp.max_request_size",
            "invalid size \"lots\"",
        ),
        (
            5,
            "receivers.otlp.wait_for_delivery",
            "invalid value: string \"maybe\", expected \"none\", \"queued\" or \"delivered\"",
        ),
        (
            8,
            "exporters.\"otlp/jaeger\".endpoint",
            "invalid type: integer `5`, expected a string",
        ),
        (
            9,
            "exporters.\"otlp/jaeger\".endpiont",
            "unknown field `endpiont`",
        ),
        (
            10,
            "exporters.\"otlp/jaeger\".compression",
            "invalid type: integer `3`",
        ),
        (
            11,
            "exporters.\"otlp/jaeger\".timeout",
            "invalid duration \"5x\"",
        ),
        (
            12,
            "exporters.\"otlp/jaeger\".retry_on_failure.max_elapsed",
            "unknown field `max_elapsed`",
        ),
        (
            13,
            "exporters.\"otlp/jaeger\".headers.\"x-api-key\"",
            "invalid type: integer `5`",
        ),
        (
            14,
            "exporters.\"otlp/jaeger\".retry",
            "unknown field `retry`",
        ),
        (
            17,
            "exporters.\"otlp/jaeger\".sending_queue.queue_size",
            "invalid type: string \"big\"",
        ),
    ];
    for (line, key, message) in want {
        assert!(
            reported(&errors, line, key, message),
            "want line {line} `{key}` `{message}`:\n{stderr}"
        );
    }
    assert_eq!(
        errors.len(),
        want.len(),
        "one error per mistake (a blanked required key is not reported missing):\n{stderr}"
    );
    ports.assert_free("many errors");
    assert_untouched(dir.path(), Some(&path), "many errors");
}

#[test]
fn a_valid_config_is_accepted_and_nothing_is_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = ports.fill(
        r#"[receivers.otlp]
grpc = "127.0.0.1:{GRPC}"
http = "${TW_VALIDATE_TEST_UNSET:-127.0.0.1:{HTTP}}"
max_request_size = "64KiB"
auth_token = "${TW_VALIDATE_TEST_UNSET:-}"
critical = true

[processors.batch]
send_batch_size = "${TW_VALIDATE_TEST_UNSET:-512}"
timeout = "200ms"
critical = "${TW_VALIDATE_TEST_UNSET:-false}"

[exporters.file]
path = "out/telemetry.jsonl"
critical = false

[exporters."otlp/jaeger"]
endpoint = "http://127.0.0.1:14317"
protocol = "http"
compression = "gzip"
timeout = "3s"
headers = { "x-api-key" = "k" }
[exporters."otlp/jaeger".sending_queue]
queue_size = 8
num_consumers = 2

[service]
http = "${TW_VALIDATE_TEST_UNSET:-127.0.0.1:{SERVICE}}"
data_dir = "${TW_VALIDATE_TEST_UNSET:-data}"
shutdown_timeout = "5s"

[service.pipelines.traces]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["${TW_VALIDATE_TEST_UNSET:-file}", "otlp/jaeger"]
capacity = "${TW_VALIDATE_TEST_UNSET:-16}"

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["file"]

[service.pipelines."logs/audit"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["file"]
capacity = 8
"#,
    );
    let path = dir.path().join("valid.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = validate(dir.path(), &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}:\n{stderr}", out.status);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "{}: valid (1 receivers, 1 processors, 2 exporters, 3 pipelines)",
            path.display()
        ),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "a clean config gives no warnings: {stderr}"
    );
    ports.assert_free("valid config");
    assert_untouched(dir.path(), Some(&path), "valid config");
}

#[test]
fn a_warning_is_printed_and_the_config_still_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = ports.fill(
        &cat(&[
            OTLP_IN,
            FILE_OUT,
            "[exporters.\"otlp/spare\"]\nendpoint = \"http://127.0.0.1:14317\"\n",
            SERVICE,
            TRACES,
        ])
        .expect("config"),
    );
    let path = dir.path().join("unused.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = validate(dir.path(), &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}:\n{stderr}", out.status);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "{}: valid (1 receivers, 0 processors, 2 exporters, 1 pipelines)",
            path.display()
        ),
        "stderr:\n{stderr}"
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{stderr}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains(&format!(
                "{}: exporters.\"otlp/spare\" is declared but no pipeline uses it",
                path.display()
            )),
        "the unused exporter is named:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes in a warning written to a pipe: {stderr:?}"
    );
    ports.assert_free("unused exporter");
    assert_untouched(dir.path(), Some(&path), "unused exporter");
}

/// The commented healthcheck example in config.toml is valid once uncommented.
#[test]
fn the_commented_healthcheck_example_in_config_toml_is_valid() {
    let shipped =
        std::fs::read_to_string(common::repo_root().join("config.toml")).expect("config.toml");
    let start = shipped
        .find("# [receivers.\"healthcheck/deps\"]")
        .expect("the healthcheck example in config.toml");
    let end = start
        + shipped[start..]
            .find("\n\n")
            .expect("the example ends with a blank line");
    let uncommented: String = shipped[start..end]
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .unwrap_or(if l == "#" { "" } else { l })
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("type = \"postgres\""), "{uncommented}");
    let config = format!("{}\n{uncommented}\n{}", &shipped[..start], &shipped[end..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = validate(dir.path(), &path);
    assert!(
        out.status.success(),
        "validate refused the uncommented example:\n{}\n{config}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_config_toml_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::repo_root().join("config.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("TRADEWATCH_OTLP_GRPC")
        .env_remove("TRADEWATCH_OTLP_HTTP")
        .env_remove("TRADEWATCH_SERVICE_HTTP")
        .output()
        .expect("run tradewatch validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": valid ("),
        "config.toml: exit {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_untouched(dir.path(), None, "config.toml");
}

/// Found by `fuzz/fuzz_targets/config.rs`: blanking the sub-table holding the first
/// mistake removed the only table declaring the component, so the next round reported a
/// spurious "component table not found" at line 0.
#[test]
fn fuzz_regression_a_component_declared_only_by_a_bad_sub_table_gets_one_located_error() {
    use tradewatch::config::{Config, Source};
    let text = "[exporters.\"otlp/upem\".r]\n[service.pipelines.traces]\n";
    let src = Source::from_text("t.toml".into(), text, &|_| None).unwrap();
    let errors = Config::from_source(&src, &tradewatch::registry::builtin())
        .err()
        .unwrap()
        .0;
    let exporter: Vec<_> = errors
        .iter()
        .filter(|e| e.key.starts_with("exporters"))
        .collect();
    assert_eq!(exporter.len(), 1, "{errors:?}");
    assert_eq!((exporter[0].line, exporter[0].column), (1, 24));
    assert!(exporter[0].message.contains("unknown field `r`"));
    assert!(errors.iter().all(|e| e.line >= 1), "{errors:?}");
}
