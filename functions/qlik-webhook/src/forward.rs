//! The webhook handler both modes share: verify, parse, filter, publish, answer.
//!
//! Promises (design.md §6–7), in this order:
//! - a body over the limit → 413;
//! - a missing, malformed or wrong `Qlik-Signature` → 401, checked on the raw bytes before any
//!   JSON parsing;
//! - not an event, or an id/type/tenant unsafe for a topic → 400 with a short reason;
//! - filtered out by type, tenant or age → 202 with the reason (deliberately not published);
//! - published and acknowledged by the broker → 200 (with `BUTLER_OUTPUT=copy`: both the raw
//!   body and the Butler copy acknowledged; the reply's `butlerTopic` says where Butler's form
//!   went);
//! - anything else → 503, so Qlik marks the delivery failed and it can be resent. Never 2xx for
//!   an event the broker did not take.
//!
//! Each request is logged once, with event id, type, tenant, topic, status and latency; never
//! the secret or the signature.

use crate::config::{ButlerOutput, FilterConfig};
use crate::publish::{Message, Publish};
use qlik_events::butler::{self, REWRITTEN_VALUE};
use qlik_events::{topic, Event, Matched, Verifier};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// An HTTP answer, independent of the server that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// A small JSON document.
    pub body: String,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Reply {
            status,
            body: body.to_string(),
        }
    }

    pub fn error(status: u16, reason: &str) -> Self {
        Reply::json(status, json!({ "error": reason }))
    }
}

/// Which events are published.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    config: FilterConfig,
}

impl Filter {
    pub fn new(config: FilterConfig) -> Self {
        Filter { config }
    }

    /// `Ok(None)` to publish, `Ok(Some(reason))` to accept without publishing, `Err` when the
    /// age cannot be judged because the event time is missing or malformed.
    pub fn check(&self, event: &Event<'_>, now: OffsetDateTime) -> Result<Option<String>, String> {
        if let Some(types) = &self.config.event_types {
            let allowed = types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event.event_type.starts_with(prefix),
                None => *t == event.event_type,
            });
            if !allowed {
                return Ok(Some(format!(
                    "event type {} is not allowed",
                    event.event_type
                )));
            }
        }
        if let Some(tenants) = &self.config.tenant_ids {
            if !tenants.iter().any(|t| *t == event.tenant_id) {
                return Ok(Some(format!("tenant {} is not allowed", event.tenant_id)));
            }
        }
        if let Some(max_age) = self.config.max_age {
            let time = event.timestamp().map_err(|e| e.to_string())?;
            let age = now - time;
            if age > max_age {
                return Ok(Some(format!(
                    "event is {}s old, more than the {}s allowed",
                    age.whole_seconds(),
                    max_age.as_secs()
                )));
            }
        }
        Ok(None)
    }
}

pub struct Forwarder {
    verifier: Verifier,
    filter: Filter,
    topic_prefix: String,
    publisher: Arc<dyn Publish>,
    max_body_bytes: usize,
    butler: ButlerOutput,
}

/// What happened to one request, for the reply and the log line.
struct Outcome<'a> {
    verdict: Verdict,
    event: Option<Event<'a>>,
    topic: Option<String>,
    /// Where Butler's form of the event went (`BUTLER_OUTPUT=copy`: its own topic; `replace`:
    /// the topic itself).
    butler_topic: Option<String>,
    /// Why no copy Butler can read was made (the raw body went out as usual).
    butler_skipped: Option<String>,
}

/// The answer to one delivery.
enum Verdict {
    /// 200: the broker acknowledged.
    Published,
    /// 202: a valid event this forwarder is set not to publish (type, tenant, age).
    Filtered(String),
    /// 4xx: the request itself is wrong (400 body, 401 signature, 413 size); resending it the
    /// same way will not help.
    Refused(u16, String),
    /// 503: the broker did not acknowledge; Qlik marks the delivery failed and it can be resent.
    Unavailable(String),
}

impl Verdict {
    fn status(&self) -> u16 {
        match self {
            Verdict::Published => 200,
            Verdict::Filtered(_) => 202,
            Verdict::Refused(status, _) => *status,
            Verdict::Unavailable(_) => 503,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Published => None,
            Verdict::Filtered(r) | Verdict::Refused(_, r) | Verdict::Unavailable(r) => Some(r),
        }
    }
}

impl Forwarder {
    pub fn new(
        verifier: Verifier,
        filter: Filter,
        topic_prefix: String,
        publisher: Arc<dyn Publish>,
        max_body_bytes: usize,
    ) -> Self {
        Forwarder {
            verifier,
            filter,
            topic_prefix,
            publisher,
            max_body_bytes,
            butler: ButlerOutput::Off,
        }
    }

    /// Also (or instead) publishes each event in a form Butler v16 reads (`BUTLER_OUTPUT`).
    pub fn with_butler_output(mut self, butler: ButlerOutput) -> Self {
        self.butler = butler;
        self
    }

    /// Publishes a test event (`com.qlik-relay.check`, tenant `qlik-webhook-check`) where this
    /// forwarder publishes (and where its Butler copies go), and returns the topics the broker
    /// acknowledged. With MQTT 5 and IoT Core a topic the broker's policy denies is an error;
    /// MQTT 3.1.1 cannot tell (the broker acknowledges anyway).
    pub async fn check(&self) -> Result<Vec<String>, String> {
        const TYPE: &str = "com.qlik-relay.check";
        const TENANT: &str = "qlik-webhook-check";
        let body = json!({
            "specversion": "1.0", "id": format!("check-{}", fastrand::u64(..)), "type": TYPE,
            "source": "qlik-webhook check", "tenantid": TENANT,
        })
        .to_string();
        let mut prefixes = vec![self.topic_prefix.as_str()];
        if let ButlerOutput::Copy { topic_prefix } = &self.butler {
            prefixes.push(topic_prefix);
        }
        let mut topics = Vec::new();
        for prefix in prefixes {
            let topic = topic::topic_for(prefix, TYPE, TENANT).map_err(|e| e.to_string())?;
            self.publisher
                .publish(Message::new(&topic, body.as_bytes()))
                .await
                .map_err(|e| format!("{topic}: {e}"))?;
            topics.push(topic);
        }
        Ok(topics)
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn publisher(&self) -> &dyn Publish {
        self.publisher.as_ref()
    }

    /// Handles one webhook delivery: the raw `Qlik-Signature` header value and the raw body.
    pub async fn handle(&self, signature: Option<&[u8]>, body: &[u8]) -> Reply {
        let started = Instant::now();
        let outcome = self.process(signature, body).await;
        let event_id = outcome.event.as_ref().map(|e| e.id.as_ref());
        let reply = match &outcome.verdict {
            Verdict::Published => {
                let mut body = json!({
                    "status": "published",
                    "eventId": event_id,
                    "topic": outcome.topic,
                });
                if let Some(butler_topic) = &outcome.butler_topic {
                    body["butlerTopic"] = json!(butler_topic);
                }
                if let Some(why) = &outcome.butler_skipped {
                    body["butlerSkipped"] = json!(why);
                }
                Reply::json(200, body)
            }
            Verdict::Filtered(reason) => Reply::json(
                202,
                json!({ "status": "filtered", "eventId": event_id, "reason": reason }),
            ),
            Verdict::Refused(status, reason) => Reply::error(*status, reason),
            Verdict::Unavailable(reason) => Reply::error(503, reason),
        };
        log(&outcome, body.len(), started.elapsed());
        reply
    }

    async fn process<'a>(&self, signature: Option<&[u8]>, body: &'a [u8]) -> Outcome<'a> {
        let outcome = |verdict: Verdict| Outcome {
            verdict,
            event: None,
            topic: None,
            butler_topic: None,
            butler_skipped: None,
        };
        let refuse = |status: u16, reason: String| outcome(Verdict::Refused(status, reason));
        if body.len() > self.max_body_bytes {
            return refuse(
                413,
                format!("body is larger than {} bytes", self.max_body_bytes),
            );
        }
        match self.verifier.verify(signature, body) {
            Ok(Matched::Current) => {}
            Ok(Matched::Previous) => {
                tracing::info!("signed with QLIK_WEBHOOK_SECRET_PREVIOUS: update the webhook's secret in Qlik Cloud");
            }
            Err(e) => return refuse(401, e.to_string()),
        }
        let event = match Event::parse(body) {
            Ok(event) => event,
            Err(e) => return refuse(400, e.to_string()),
        };
        let topic = match topic::topic_for(&self.topic_prefix, &event.event_type, &event.tenant_id)
        {
            Ok(topic) => topic,
            Err(e) => {
                return Outcome {
                    event: Some(event),
                    ..refuse(400, e.to_string())
                }
            }
        };
        match self.filter.check(&event, OffsetDateTime::now_utc()) {
            Ok(None) => {}
            Ok(Some(reason)) => {
                return Outcome {
                    event: Some(event),
                    ..outcome(Verdict::Filtered(reason))
                };
            }
            Err(reason) => {
                return Outcome {
                    event: Some(event),
                    ..refuse(400, reason)
                }
            }
        }
        // The header is verified hex by now, so this is plain ASCII.
        let signature = signature
            .and_then(|s| std::str::from_utf8(s).ok())
            .map(str::trim);
        let raw = Message {
            topic: &topic,
            payload: body,
            signature,
            rewritten: None,
        };
        // A CloudEvents body with the legacy fields added; legacy and hybrid bodies as they are.
        let rewritten = match self.butler {
            ButlerOutput::Off => None,
            _ => butler::legacy_body(&event, body),
        };
        let for_butler = |topic| butler_message(topic, rewritten.as_deref(), raw);
        // A body Butler cannot read (its `eventType` or `extensions.tenantId` missing, null or of
        // another kind, which the rewrite does not replace) gets no Butler form: the raw body
        // goes out as usual, and the log line says why.
        let butler_skipped = match self.butler {
            ButlerOutput::Off => None,
            _ => butler::butler_can_read(rewritten.as_deref().unwrap_or(body)).err(),
        };
        let (result, butler_topic) = match &self.butler {
            _ if butler_skipped.is_some() => (self.publisher.publish(raw).await, None),
            ButlerOutput::Off => (self.publisher.publish(raw).await, None),
            ButlerOutput::Replace => (
                self.publisher.publish(for_butler(topic.as_str())).await,
                Some(topic.clone()),
            ),
            ButlerOutput::Copy { topic_prefix } => {
                let butler_topic =
                    match topic::topic_for(topic_prefix, &event.event_type, &event.tenant_id) {
                        Ok(t) => t,
                        Err(e) => {
                            return Outcome {
                                event: Some(event),
                                ..refuse(400, format!("Butler copy: {e}"))
                            }
                        }
                    };
                // Both must be acknowledged before the 2xx; either failing is a 503 (Qlik resends
                // both: the listener de-duplicates, Butler may alert twice).
                let (a, b) = tokio::join!(
                    self.publisher.publish(raw),
                    self.publisher.publish(for_butler(butler_topic.as_str()))
                );
                (a.and(b), Some(butler_topic))
            }
        };
        Outcome {
            verdict: match result {
                Ok(()) => Verdict::Published,
                Err(e) => Verdict::Unavailable(e.to_string()),
            },
            event: Some(event),
            topic: Some(topic),
            butler_topic,
            butler_skipped,
        }
    }
}

/// The message for Butler on `topic`: the rewritten body if there is one, else the raw message.
/// The rewritten body is not what Qlik signed: it is marked, and never sent with the signature.
fn butler_message<'m>(
    topic: &'m str,
    rewritten: Option<&'m [u8]>,
    raw: Message<'m>,
) -> Message<'m> {
    match rewritten {
        Some(payload) => Message {
            topic,
            payload,
            signature: None,
            rewritten: Some(REWRITTEN_VALUE),
        },
        None => Message { topic, ..raw },
    }
}

fn log(outcome: &Outcome<'_>, bytes: usize, elapsed: Duration) {
    let event = outcome.event.as_ref();
    let id = event.map(|e| e.id.as_ref()).unwrap_or("-");
    let event_type = event.map(|e| e.event_type.as_ref()).unwrap_or("-");
    let tenant = event.map(|e| e.tenant_id.as_ref()).unwrap_or("-");
    let format = event.map(|e| e.format.as_str()).unwrap_or("-");
    let topic = outcome.topic.as_deref().unwrap_or("-");
    let butler_topic = outcome.butler_topic.as_deref().unwrap_or("-");
    let reason = outcome.verdict.reason().unwrap_or("-");
    let status = outcome.verdict.status();
    let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                status,
                event_id = id,
                event_type,
                tenant,
                format,
                topic,
                butler_topic,
                bytes,
                latency_ms,
                reason,
                $msg
            )
        };
    }
    if let (Verdict::Published, Some(why)) = (&outcome.verdict, &outcome.butler_skipped) {
        tracing::warn!(event_id = id, event_type, tenant, reason = %why, "no copy Butler can read: published the raw body only (Butler will not see this event)");
    }
    match outcome.verdict {
        Verdict::Published => line!(info, "webhook published"),
        Verdict::Filtered(_) => line!(info, "webhook accepted, not published"),
        Verdict::Unavailable(_) => line!(error, "webhook not published"),
        Verdict::Refused(..) => line!(warn, "webhook refused"),
    }
}

#[cfg(test)]
mod tests;
