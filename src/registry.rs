//! The one table that maps a configuration type name to its component. This is the only
//! file that names every component type; the core (`component`, `config`, `pipeline`,
//! `service`, `otlp`, `state`) knows components only through the traits in
//! [`crate::component`].

use crate::component::Registry;

/// Every component tradewatch ships.
pub fn builtin() -> Registry {
    Registry {
        receivers: vec![
            ("otlp", crate::receivers::otlp::parse),
            ("alerts", crate::receivers::alerts::parse),
            ("freqtrade", crate::receivers::freqtrade::parse),
            ("logtail", crate::receivers::logtail::parse),
            ("healthcheck", crate::receivers::healthcheck::parse),
            ("nats", crate::receivers::nats::parse),
        ],
        processors: vec![
            ("batch", crate::processors::batch::parse),
            ("resource", crate::processors::resource::parse),
            ("risk", crate::processors::risk::parse),
            (
                "ratio_to_percent",
                crate::processors::ratio_to_percent::parse,
            ),
            ("trace_enrich", crate::processors::trace_enrich::parse),
            ("attributes", crate::processors::attributes::parse),
        ],
        exporters: vec![
            ("otlp", crate::exporters::otlp::parse),
            ("file", crate::exporters::file::parse),
            ("debug", crate::exporters::debug::parse),
            ("nop", crate::exporters::nop::parse),
            ("prometheus", crate::exporters::prometheus::parse),
            ("cloudwatch_emf", crate::exporters::cloudwatch::emf::parse),
            #[cfg(feature = "aws")]
            (
                "cloudwatch",
                crate::exporters::cloudwatch::metric_data::parse,
            ),
            ("slack", crate::exporters::slack::parse),
            ("telegram", crate::exporters::telegram::parse),
            ("webhook", crate::exporters::webhook::parse),
            ("alertmanager", crate::exporters::alertmanager::parse),
            ("log", crate::exporters::log::parse),
            ("nats", crate::exporters::nats::parse),
            #[cfg(feature = "aws")]
            ("sns", crate::exporters::sns::parse),
        ],
    }
}
