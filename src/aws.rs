//! The AWS SDK set-up shared by the components that call AWS (the `sns` exporter, the
//! `healthcheck` receiver's AWS checks): one HTTPS client (rustls with ring, as reqwest's),
//! credentials and — unless given — the region from the environment's default chain, an
//! optional endpoint (a local AWS such as moto), no SDK retries (the caller has its own
//! retry policy), and the caller's timeouts.

use std::time::Duration;

/// How a component wants its AWS clients configured.
#[derive(Debug, Clone, Default)]
pub struct SdkSettings<'a> {
    /// `None`: the environment's region (`AWS_REGION`, profile).
    pub region: Option<&'a str>,
    /// `None`: AWS itself.
    pub endpoint_url: Option<&'a str>,
    /// Bounds each attempt of an operation.
    pub attempt_timeout: Duration,
    /// Bounds connecting; `None`: the SDK's default.
    pub connect_timeout: Option<Duration>,
}

/// The SDK configuration every service client of one component is built from.
pub async fn sdk_config(s: SdkSettings<'_>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut timeouts =
        aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(s.attempt_timeout);
    if let Some(t) = s.connect_timeout {
        timeouts = timeouts.connect_timeout(t);
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(timeouts.build());
    if let Some(region) = s.region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(url) = s.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
