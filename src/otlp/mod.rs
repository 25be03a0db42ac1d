//! OTLP helpers shared by receivers and exporters.

pub mod attrs;
pub mod build;
pub mod edit;
pub mod json;
pub mod log_limit;
pub mod metric_names;
pub mod resource_wire;
pub mod wire;

pub use attrs::{
    attr, get_attr, get_f64, get_str, hex_id, insert_attr, remove_attr, set_attr, value_text,
    AttrValue, IntoAttributes, Timestamp,
};
pub use build::{log_record, LogsBuilder, MetricsBuilder, Number, Temporality};
pub use edit::{
    for_each_log_record, for_each_log_record_mut, for_each_metric_point, for_each_metric_point_mut,
    LogCtx, MetricKind, MetricMut, MetricRef, PointMut, PointRef,
};

/// `google.rpc.Status`: the error body of OTLP/HTTP and the details of a gRPC status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
