//! Alerts for reload failures: one delivery per configured channel and event.
//!
//! Promises (design.md §6):
//! - each (event, channel) is recorded in the journal as pending / sending / sent / failed /
//!   suppressed, so a restart resumes exactly the channels not yet done and never repeats a
//!   sent one (an attempt cut off by a crash is tried again: at-least-once);
//! - `alertEnableByTag` and `rateLimit` (per app and channel, kept across restarts) suppress
//!   alerts visibly, as `suppressed` with the reason, not silently;
//! - 5xx, 429 and network errors are retried with back-off until the give-up time, then the
//!   delivery is recorded `failed` with one error log; other 4xx fail at once;
//! - channels are delivered concurrently, so a slow or failing one never delays the others.

pub mod render;

use crate::config::{ChannelConfig, ChannelKind};
use crate::journal::{Delivery, DeliveryState, Journal, JournalError};
use relay_mqtt::{Message, Publish, PublishError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The header carrying our webhook's HMAC-SHA256 (lowercase hex of the raw body), like Qlik's.
pub const SIGNATURE_HEADER: &str = "X-Qlik-Relay-Signature";

/// Sends alerts and records what happened.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    journal: Journal,
    give_up: Duration,
    retry_base: Duration,
    /// For the MQTT channel: publishes on the listener's broker, PUBACK awaited.
    mqtt: Option<Arc<dyn Publish>>,
}

/// Why one attempt did not deliver.
enum AttemptError {
    /// Worth another try later.
    Retry(String),
    /// Will not get better by retrying.
    Permanent(String),
}

impl Notifier {
    pub fn new(
        journal: Journal,
        give_up: Duration,
        retry_base: Duration,
        mqtt: Option<Arc<dyn Publish>>,
    ) -> anyhow::Result<Notifier> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("qlik-listener/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            http,
            journal,
            give_up,
            retry_base,
            mqtt,
        })
    }

    /// Delivers `data` (the event's alert data) on every channel, concurrently. Returns once
    /// every delivery is final (or could not be recorded).
    pub async fn deliver_all(
        &self,
        event_id: &str,
        channels: &[ChannelConfig],
        data: &Value,
    ) -> Result<(), JournalError> {
        let deliveries = channels
            .iter()
            .map(|channel| self.deliver(event_id, channel, data));
        let results = futures_util::future::join_all(deliveries).await;
        results.into_iter().collect()
    }

    async fn deliver(
        &self,
        event_id: &str,
        channel: &ChannelConfig,
        data: &Value,
    ) -> Result<(), JournalError> {
        let mut delivery = match self.journal.delivery(event_id, &channel.id).await? {
            Some(d) if d.state.is_final() => return Ok(()),
            Some(d) => d,
            None => {
                let d = Delivery {
                    event_id: event_id.to_owned(),
                    channel: channel.id.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    last_error: None,
                };
                // Rules are decided once, when the delivery is first recorded.
                if let Some(reason) = self.suppression(channel, data).await? {
                    tracing::info!(event_id, channel = %channel.id, reason = %reason, "alert suppressed");
                    return self
                        .journal
                        .set_delivery(Delivery {
                            state: DeliveryState::Suppressed,
                            last_error: Some(reason),
                            ..d
                        })
                        .await;
                }
                self.journal.set_delivery(d.clone()).await?;
                d
            }
        };

        let channel_data = render::channel_data(channel, data);
        let rendered = match render::render(channel, &channel_data) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event_id, channel = %channel.id, error = %e, "alert cannot be rendered");
                delivery.state = DeliveryState::Failed;
                delivery.last_error = Some(e.to_string());
                return self.journal.set_delivery(delivery).await;
            }
        };
        if let Some(reason) = &rendered.fallback {
            tracing::warn!(event_id, channel = %channel.id, reason = %reason, "user template failed; sent the built-in one");
        }
        let body = rendered.body.to_string();

        let deadline = tokio::time::Instant::now() + self.give_up;
        loop {
            delivery.attempts += 1;
            delivery.state = DeliveryState::Sending;
            self.journal.set_delivery(delivery.clone()).await?;
            let outcome = self.attempt(channel, event_id, &body).await;
            match outcome {
                Ok(()) => {
                    tracing::info!(event_id, channel = %channel.id, attempts = delivery.attempts, "alert sent");
                    delivery.state = DeliveryState::Sent;
                    delivery.last_error = None;
                    return self.journal.set_delivery(delivery).await;
                }
                Err(AttemptError::Permanent(reason)) => {
                    tracing::error!(event_id, channel = %channel.id, error = %reason, "alert refused by the receiver; giving up");
                    delivery.state = DeliveryState::Failed;
                    delivery.last_error = Some(reason);
                    return self.journal.set_delivery(delivery).await;
                }
                Err(AttemptError::Retry(reason)) => {
                    let wait = backoff(self.retry_base, delivery.attempts);
                    if tokio::time::Instant::now() + wait > deadline {
                        tracing::error!(event_id, channel = %channel.id, attempts = delivery.attempts, error = %reason, "alert not delivered within the give-up time");
                        delivery.state = DeliveryState::Failed;
                        delivery.last_error = Some(reason);
                        return self.journal.set_delivery(delivery).await;
                    }
                    tracing::debug!(event_id, channel = %channel.id, error = %reason, "alert attempt failed; retrying");
                    delivery.state = DeliveryState::Pending;
                    delivery.last_error = Some(reason);
                    self.journal.set_delivery(delivery.clone()).await?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Whether the rules say not to send: tag gating, then the rate limit.
    async fn suppression(
        &self,
        channel: &ChannelConfig,
        data: &Value,
    ) -> Result<Option<String>, JournalError> {
        if let Some(tag) = &channel.tag {
            let tagged = data["appTags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag.as_str())));
            if !tagged {
                return Ok(Some(format!("the app does not have the tag {tag:?}")));
            }
        }
        if channel.rate_limit_secs > 0 {
            let app = data["appId"].as_str().unwrap_or_default();
            let key = format!("{}:{app}", channel.id);
            let window_ms = (channel.rate_limit_secs * 1000) as i64;
            if !self.journal.claim_rate_slot(&key, window_ms).await? {
                return Ok(Some(format!(
                    "rate limit: an alert for this app was sent less than {}s ago",
                    channel.rate_limit_secs
                )));
            }
        }
        Ok(None)
    }

    async fn attempt(
        &self,
        channel: &ChannelConfig,
        event_id: &str,
        body: &str,
    ) -> Result<(), AttemptError> {
        if let Some(topic) = &channel.topic {
            let Some(mqtt) = &self.mqtt else {
                return Err(AttemptError::Permanent(
                    "no MQTT connection for alerts".into(),
                ));
            };
            let message = Message {
                topic,
                payload: body.as_bytes(),
                signature: None,
            };
            return match mqtt.publish(message).await {
                Ok(()) => Ok(()),
                Err(e @ PublishError::Refused(_)) => Err(AttemptError::Permanent(e.to_string())),
                Err(e) => Err(AttemptError::Retry(e.to_string())),
            };
        }
        let Some(url) = &channel.url else {
            return Err(AttemptError::Permanent("no URL configured".into()));
        };
        let mut request = self
            .http
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body.to_owned());
        if channel.kind == ChannelKind::Webhook {
            request = request.header("X-Qlik-Relay-Event-Id", event_id);
            if let Some(secret) = &channel.secret {
                request =
                    request.header(SIGNATURE_HEADER, qlik_events::sign(secret, body.as_bytes()));
            }
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                if status == 429 || status >= 500 || status == 408 {
                    Err(AttemptError::Retry(format!("HTTP {status}")))
                } else {
                    Err(AttemptError::Permanent(format!("HTTP {status}")))
                }
            }
            Err(e) if e.is_timeout() => Err(AttemptError::Retry("timed out".into())),
            Err(e) if e.is_connect() => Err(AttemptError::Retry("cannot connect".into())),
            Err(_) => Err(AttemptError::Retry("request failed".into())),
        }
    }
}

/// `base`, doubling per attempt, capped at a minute.
fn backoff(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 4), Duration::from_millis(800));
        assert_eq!(backoff(base, 40), Duration::from_secs(60));
    }
}
