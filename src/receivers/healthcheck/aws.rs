//! The AWS checks, each one cheap read-only call: `sns` GetTopicAttributes, `sqs`
//! GetQueueAttributes, `s3` HeadBucket, `dynamodb` DescribeTable (the table must be
//! ACTIVE), `cloudwatch_logs` DescribeLogGroups (the group must exist).
//!
//! The SDK is set up as for the `sns` exporter ([`crate::aws::sdk_config`]): no retries (the
//! next interval is the retry), the check's timeout for connecting and for the attempt.

use super::probe::Failure;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    SnsTopic(String),
    SqsQueue(String),
    S3Bucket(String),
    DynamoDbTable(String),
    LogGroup(String),
}

pub struct AwsProbe {
    pub resource: Resource,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub timeout: Duration,
    sdk: OnceCell<aws_config::SdkConfig>,
}

impl AwsProbe {
    pub fn new(
        resource: Resource,
        region: Option<String>,
        endpoint_url: Option<String>,
        timeout: Duration,
    ) -> AwsProbe {
        AwsProbe {
            resource,
            region,
            endpoint_url,
            timeout,
            sdk: OnceCell::new(),
        }
    }

    async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk
            .get_or_init(|| {
                crate::aws::sdk_config(crate::aws::SdkSettings {
                    region: self.region.as_deref(),
                    endpoint_url: self.endpoint_url.as_deref(),
                    attempt_timeout: self.timeout,
                    connect_timeout: Some(self.timeout),
                })
            })
            .await
    }

    pub async fn run(&self) -> Result<(), Failure> {
        let sdk = self.sdk().await;
        match &self.resource {
            Resource::SnsTopic(arn) => {
                aws_sdk_sns::Client::new(sdk)
                    .get_topic_attributes()
                    .topic_arn(arn)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("sns GetTopicAttributes", arn, e))?;
                Ok(())
            }
            Resource::SqsQueue(url) => {
                aws_sdk_sqs::Client::new(sdk)
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("sqs GetQueueAttributes", url, e))?;
                Ok(())
            }
            Resource::S3Bucket(bucket) => {
                // A local endpoint (moto) serves buckets by path, not by host name.
                let conf = aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(self.endpoint_url.is_some())
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
                    .head_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("s3 HeadBucket", bucket, e))?;
                Ok(())
            }
            Resource::DynamoDbTable(table) => {
                let out = aws_sdk_dynamodb::Client::new(sdk)
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("dynamodb DescribeTable", table, e))?;
                let status = out
                    .table()
                    .and_then(|t| t.table_status())
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "unknown".into());
                if status == "ACTIVE" {
                    Ok(())
                } else {
                    Err(Failure::new(
                        "state",
                        format!("dynamodb table {table:?} is {status}, expected ACTIVE"),
                    ))
                }
            }
            Resource::LogGroup(group) => {
                let out = aws_sdk_cloudwatchlogs::Client::new(sdk)
                    .describe_log_groups()
                    .log_group_name_prefix(group)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("cloudwatch_logs DescribeLogGroups", group, e))?;
                if out
                    .log_groups()
                    .iter()
                    .any(|g| g.log_group_name() == Some(group.as_str()))
                {
                    Ok(())
                } else {
                    Err(Failure::new(
                        "missing",
                        format!("cloudwatch_logs: no log group named {group:?}"),
                    ))
                }
            }
        }
    }
}

/// What went wrong with one call, in AWS's words: the HTTP status and error code of a
/// refusal (`404 ResourceNotFoundException: ...`), or why no answer came.
fn sdk_failure<E>(op: &str, target: &str, e: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            let code = err.code().unwrap_or("no error code");
            let text = err.message().unwrap_or("");
            let reason =
                if status == 404 || code.contains("NotFound") || code.contains("NonExistent") {
                    "missing"
                } else if status == 401 || status == 403 {
                    "auth"
                } else {
                    "status"
                };
            let text = if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            };
            Failure::new(
                reason,
                format!("{op} {target:?}: HTTP {status} {code}{text}"),
            )
        }
        SdkError::TimeoutError(_) => Failure::new("timeout", format!("{op} {target:?}: timed out")),
        SdkError::DispatchFailure(d) => {
            let reason = if d.is_timeout() { "timeout" } else { "connect" };
            Failure::new(
                reason,
                format!(
                    "{op} {target:?}: cannot reach the endpoint: {}",
                    DisplayErrorContext(&e)
                ),
            )
        }
        _ => Failure::new(
            "protocol",
            format!("{op} {target:?}: {}", DisplayErrorContext(&e)),
        ),
    }
}
