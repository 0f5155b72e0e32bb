//! Publishing to AWS IoT Core through its HTTPS data plane (`POST /topics/{topic}?qos=1`).
//!
//! Why HTTPS and not MQTT from a Lambda: no connection to keep alive across freezes, IAM instead
//! of device certificates, and IoT Core's HTTP 200 is its acknowledgement. The endpoint is the
//! account's `…-ats.iot.<region>.amazonaws.com`, given in the configuration: no
//! `DescribeEndpoint` call at cold start.

use super::{Message, Publish, PublishError, PublishFuture};
use aws_sdk_iotdataplane::primitives::Blob;
use std::time::Duration;

pub struct IotCorePublisher {
    client: aws_sdk_iotdataplane::Client,
    endpoint_url: String,
    timeout: Duration,
}

impl IotCorePublisher {
    pub fn new(sdk: &aws_config::SdkConfig, endpoint_url: &str, timeout: Duration) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(timeout)
            .build();
        let conf = aws_sdk_iotdataplane::config::Builder::from(sdk)
            .endpoint_url(endpoint_url)
            .timeout_config(timeouts)
            .build();
        IotCorePublisher {
            client: aws_sdk_iotdataplane::Client::from_conf(conf),
            endpoint_url: endpoint_url.to_owned(),
            timeout,
        }
    }

    async fn send(&self, msg: Message<'_>) -> Result<(), PublishError> {
        // IoT Core takes MQTT 5 user properties as a JSON array of objects; the SDK encodes it.
        let properties: Vec<serde_json::Value> = msg
            .user_properties()
            .into_iter()
            .map(|(k, v)| serde_json::json!({ k: v }))
            .collect();
        let user_properties =
            (!properties.is_empty()).then(|| serde_json::Value::from(properties).to_string());
        let request = self
            .client
            .publish()
            .topic(msg.topic)
            .qos(1)
            .retain(false)
            .payload(Blob::new(msg.payload))
            .set_user_properties(user_properties)
            .send();
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe_error(e)),
            Err(_) => Err(PublishError::Timeout(self.timeout)),
        }
    }
}

fn describe_error<E, R>(e: aws_sdk_iotdataplane::error::SdkError<E, R>) -> PublishError
where
    E: std::error::Error + aws_sdk_iotdataplane::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_iotdataplane::error::SdkError;
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("error");
            let message = err.message().unwrap_or("");
            PublishError::Refused(format!("IoT Core: {code} {message}").trim_end().to_owned())
        }
        SdkError::TimeoutError(_) => {
            PublishError::Unavailable("IoT Core: request timed out".into())
        }
        _ => PublishError::Unavailable(format!(
            "IoT Core: {}",
            aws_sdk_iotdataplane::error::DisplayErrorContext(&e)
        )),
    }
}

impl Publish for IotCorePublisher {
    fn publish<'a>(&'a self, message: Message<'a>) -> PublishFuture<'a> {
        Box::pin(self.send(message))
    }

    fn describe(&self) -> String {
        format!("AWS IoT Core at {}", self.endpoint_url)
    }
}
