//! `qlik-webhook`: verifies Qlik Cloud webhooks and publishes them to MQTT.
//!
//! The same [`forward::Forwarder`] serves two front ends: [`lambda`] (AWS Lambda, API Gateway
//! or Function URL) and [`server`] (a plain HTTP server). It checks the signature
//! ([`qlik_events::signature`]), reads just enough of the event ([`qlik_events::event`]), maps
//! it to a topic ([`qlik_events::topic`]) and publishes through one of the [`publish`]ers,
//! answering 2xx only once the broker acknowledged.

pub mod config;
pub mod forward;
pub mod http;
pub mod lambda;
pub mod publish;
pub mod secrets;
pub mod server;
pub mod test_event;
pub mod variables;

use anyhow::Context as _;
use config::{Config, MqttUrl, MqttUrlSource, PublisherConfig};
use forward::{Filter, Forwarder};
use publish::{iot_core::IotCorePublisher, Publish};
use qlik_events::Verifier;
use std::sync::Arc;

/// Builds the forwarder from its configuration: fetches secrets, prepares the publisher and,
/// for MQTT, opens the broker connection (a failure there is logged, not fatal: the broker may
/// come up later, and until then webhooks get 503 and Qlik can resend them).
pub async fn build(config: Config) -> anyhow::Result<Forwarder> {
    let aws = if config.needs_aws() {
        Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await,
        )
    } else {
        None
    };
    let secret = secrets::resolve(&config.secret, aws.as_ref()).await?;
    let previous = match &config.previous_secret {
        Some(source) => Some(secrets::resolve_previous(source, aws.as_ref()).await?),
        None => None,
    };
    let verifier = Verifier::new(&secret, previous.as_ref());

    let publisher: Arc<dyn Publish> = match &config.publisher {
        PublisherConfig::IotCore { endpoint_url } => {
            let sdk = aws
                .as_ref()
                .context("AWS_IOT_ENDPOINT: no AWS configuration")?;
            Arc::new(IotCorePublisher::new(
                sdk,
                endpoint_url,
                config.publish_timeout,
            ))
        }
        PublisherConfig::Mqtt(mqtt) => {
            let url = match &mqtt.url {
                MqttUrlSource::Env(url) => url.clone(),
                MqttUrlSource::Ssm(name) => {
                    let value =
                        secrets::ssm_parameter(aws.as_ref(), "MQTT_URL_SSM_PARAMETER", name)
                            .await?;
                    MqttUrl::parse("MQTT_URL_SSM_PARAMETER", &value)?
                }
            };
            if mqtt.protocol == config::MqttProtocol::V311 {
                tracing::warn!("MQTT_PROTOCOL_VERSION=3.1.1: the broker acknowledges a publish its ACL denies (and 3.1.1 carries no qlik-signature), so a 200 cannot prove the event was taken; use MQTT 5 if the broker has it, and run `qlik-webhook check`");
            }
            let publisher =
                publish::mqtt::publisher(mqtt, url, config.max_body_bytes, config.publish_timeout)?;
            if let Err(e) = publisher.connect().await {
                tracing::warn!(broker = %publisher.describe(), error = %e, "broker not reachable yet; webhooks get 503 until it is");
            }
            Arc::new(publisher)
        }
    };
    for warning in config.filter.warnings() {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        publisher = %publisher.describe(),
        topic_prefix = %config.topic_prefix,
        max_body_bytes = config.max_body_bytes,
        previous_secret = config.previous_secret.is_some(),
        butler_output = ?config.butler,
        "forwarder ready"
    );
    Ok(Forwarder::new(
        verifier,
        Filter::new(config.filter),
        config.topic_prefix,
        publisher,
        config.max_body_bytes,
    )
    .with_butler_output(config.butler))
}
