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
//! - channels are delivered concurrently, so a slow or failing one never delays the others;
//! - at shutdown ([`Notifier::stopped_by`]) an attempt under way completes and is recorded, and
//!   no new attempt starts: what is left stays pending for the next start.

pub mod channel;
pub mod operator;
pub mod render;
pub mod templates;

pub use operator::OperatorAlert;

use crate::alert::AlertData;
use crate::config::{ChannelConfig, ChannelKind, RateKey, SmtpConfig, Target};
use crate::journal::{Delivery, DeliveryState, Journal, JournalError};
use relay_mqtt::Publish;
use std::sync::Arc;
use std::time::Duration;

/// The header carrying our webhook's HMAC-SHA256 (lowercase hex of the raw body), like Qlik's.
pub const SIGNATURE_HEADER: &str = "X-Qlik-Relay-Signature";

/// Sends alerts and records what happened.
#[derive(Clone)]
pub struct Notifier {
    senders: channel::Senders,
    journal: Journal,
    give_up: Duration,
    retry_base: Duration,
    /// True once the listener stops: no new attempt starts (one under way completes).
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Why one attempt did not deliver.
pub(crate) enum AttemptError {
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
        smtp: Option<&SmtpConfig>,
    ) -> anyhow::Result<Notifier> {
        let smtp = smtp.map(channel::smtp_transport).transpose()?;
        Ok(Notifier {
            senders: channel::Senders::new(mqtt, smtp)?,
            journal,
            give_up,
            retry_base,
            closing: None,
        })
    }

    /// Stops making new attempts once `closing` says so: an attempt under way completes and is
    /// recorded; a delivery waiting for its next try stays pending (for the next start).
    pub fn stopped_by(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Notifier {
        self.closing = Some(closing);
        self
    }

    fn is_closing(&self) -> bool {
        self.closing.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Sleeps `wait`, or less when the listener starts stopping; `true` if it is stopping.
    async fn pause(&self, wait: Duration) -> bool {
        let Some(mut closing) = self.closing.clone() else {
            tokio::time::sleep(wait).await;
            return false;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        self.is_closing()
    }

    /// Delivers `data` (the event's alert data) on every channel, concurrently. Returns once
    /// every delivery is final (or could not be recorded).
    pub async fn deliver_all(
        &self,
        event_id: &str,
        channels: &[ChannelConfig],
        data: &AlertData,
    ) -> Result<(), JournalError> {
        self.deliver_each(event_id, channels, Message::Reload(data), true)
            .await
    }

    /// A reload alert sent by hand (`preview --send`, `history resend`) under `id`: every
    /// channel, without the tag and rate-limit rules.
    pub async fn deliver_by_hand(
        &self,
        id: &str,
        channels: &[ChannelConfig],
        data: &AlertData,
    ) -> Result<(), JournalError> {
        self.deliver_each(id, channels, Message::Reload(data), false)
            .await
    }

    /// An alert for the operator (about the safety net, not a reload): every channel, with the
    /// operator templates, without the channels' tag and rate-limit rules, which are about apps.
    pub async fn deliver_operator(
        &self,
        channels: &[ChannelConfig],
        alert: &OperatorAlert,
    ) -> Result<(), JournalError> {
        self.deliver_each(&alert.alert_id, channels, Message::Operator(alert), false)
            .await
    }

    async fn deliver_each(
        &self,
        event_id: &str,
        channels: &[ChannelConfig],
        message: Message<'_>,
        rules: bool,
    ) -> Result<(), JournalError> {
        let no_owner = AlertData::default();
        let for_routes = match message {
            Message::Reload(data) => data,
            Message::Operator(_) => &no_owner,
        };
        let routes: Vec<Route<'_>> = channels
            .iter()
            .flat_map(|c| routes(c, for_routes))
            .collect();
        let deliveries = routes
            .iter()
            .map(|route| self.deliver(event_id, route, message, rules));
        let results = futures_util::future::join_all(deliveries).await;
        results.into_iter().collect()
    }

    async fn deliver(
        &self,
        event_id: &str,
        route: &Route<'_>,
        message: Message<'_>,
        rules: bool,
    ) -> Result<(), JournalError> {
        let channel = route.channel;
        let kind = channel.target.kind();
        let target_id = route.id.as_str();
        let mut delivery = match self.journal.delivery(event_id, target_id).await? {
            Some(d) if d.state.is_final() => return Ok(()),
            Some(d) => d,
            None => {
                let d = Delivery {
                    event_id: event_id.to_owned(),
                    channel: route.id.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    last_error: None,
                };
                // Rules are decided once, when the delivery is first recorded. A rate limit's
                // slot is taken together with recording `d`, so a restart does not suppress
                // this event for its own slot.
                let suppressed = match message {
                    Message::Reload(data) if rules => self.suppression(route, data, &d).await?,
                    _ => None,
                };
                if let Some(reason) = suppressed {
                    tracing::info!(event_id, channel = target_id, reason = %reason, "alert suppressed");
                    return self
                        .finish(
                            kind,
                            Delivery {
                                state: DeliveryState::Suppressed,
                                last_error: Some(reason),
                                ..d
                            },
                        )
                        .await;
                }
                // Otherwise recorded with its first attempt (`sending`), just below.
                d
            }
        };

        let rendered = match message {
            Message::Reload(data) => {
                channel::render_reload(channel, &channel::channel_data(channel, data))
            }
            Message::Operator(alert) => channel::render_operator(channel, alert).map(|p| (p, None)),
        };
        let payload = match rendered {
            Ok((payload, fallback)) => {
                if let Some(reason) = fallback {
                    tracing::warn!(event_id, channel = target_id, reason = %reason, "user template failed; sent the built-in one");
                }
                payload
            }
            Err(e) => {
                tracing::error!(event_id, channel = target_id, error = %e, "alert cannot be rendered");
                delivery.state = DeliveryState::Failed;
                delivery.last_error = Some(e.to_string());
                return self.finish(kind, delivery).await;
            }
        };

        let deadline = tokio::time::Instant::now() + self.give_up;
        loop {
            if self.is_closing() {
                // Not started: recorded as it is (pending), sent at the next start.
                return Ok(());
            }
            delivery.attempts += 1;
            delivery.state = DeliveryState::Sending;
            self.journal.set_delivery(delivery.clone()).await?;
            let outcome = self.senders.send(route, event_id, &payload).await;
            match outcome {
                Ok(()) => {
                    tracing::info!(
                        event_id,
                        channel = target_id,
                        attempts = delivery.attempts,
                        "alert sent"
                    );
                    delivery.state = DeliveryState::Sent;
                    delivery.last_error = None;
                    if let Some(latency) = match message {
                        Message::Reload(data) => since_reload_end(data),
                        Message::Operator(_) => None,
                    } {
                        crate::metrics::METRICS.alert_latency(latency);
                    }
                    return self.finish(kind, delivery).await;
                }
                Err(AttemptError::Permanent(reason)) => {
                    tracing::error!(event_id, channel = target_id, error = %reason, "alert refused by the receiver; giving up");
                    delivery.state = DeliveryState::Failed;
                    delivery.last_error = Some(reason);
                    return self.finish(kind, delivery).await;
                }
                Err(AttemptError::Retry(reason)) => {
                    let wait = backoff(self.retry_base, delivery.attempts);
                    if tokio::time::Instant::now() + wait > deadline {
                        tracing::error!(event_id, channel = target_id, attempts = delivery.attempts, error = %reason, "alert not delivered within the give-up time");
                        delivery.state = DeliveryState::Failed;
                        delivery.last_error = Some(reason);
                        return self.finish(kind, delivery).await;
                    }
                    tracing::debug!(event_id, channel = target_id, error = %reason, "alert attempt failed; retrying");
                    delivery.state = DeliveryState::Pending;
                    delivery.last_error = Some(reason);
                    self.journal.set_delivery(delivery.clone()).await?;
                    if self.pause(wait).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Records a delivery's final state (and counts it for `/metrics`). An alert that was sent
    /// must not be sent again because the journal was briefly unreachable (a shared journal's
    /// database restarting): recording is retried, with back-off, for up to `giveUpSeconds`
    /// or until the listener stops (then the delivery stays `sending`: at-least-once).
    async fn finish(&self, kind: ChannelKind, delivery: Delivery) -> Result<(), JournalError> {
        crate::metrics::METRICS.alert(kind.as_str(), delivery.state.as_str());
        let deadline = tokio::time::Instant::now() + self.give_up;
        let mut tries = 0;
        loop {
            match self.journal.set_delivery(delivery.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tries += 1;
                    let wait = backoff(self.retry_base, tries);
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    if tries == 1 {
                        tracing::warn!(event_id = %delivery.event_id, channel = %delivery.channel, state = delivery.state.as_str(), error = %e, "cannot record the delivery's outcome; retrying");
                    }
                    if self.pause(wait).await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Whether the rules say not to send: tag gating, then the rate limit (whose slot, when
    /// free, is taken with `pending` recorded).
    async fn suppression(
        &self,
        route: &Route<'_>,
        data: &AlertData,
        pending: &Delivery,
    ) -> Result<Option<String>, JournalError> {
        let rules = &route.channel.rules;
        if let Some(tag) = &rules.tag {
            let tagged = data.app_tags.iter().any(|t| t == tag);
            if !tagged {
                return Ok(Some(format!("the app does not have the tag {tag:?}")));
            }
        }
        if rules.rate_limit_secs > 0 {
            // Per channel and app or reload (as Butler keys it); e-mail's route is per
            // recipient, so per app and recipient.
            let (what, id) = match rules.rate_key {
                RateKey::App => ("app", &data.app_id),
                RateKey::Reload => ("reload", &data.reload_id),
            };
            let key = format!("{}:{id}", route.id);
            let window_ms = (rules.rate_limit_secs * 1000) as i64;
            let claimed = self
                .journal
                .claim_rate_slot(&key, window_ms, pending.clone())
                .await?;
            if !claimed {
                return Ok(Some(format!(
                    "rate limit (rateLimit): an alert for this {what} was sent less than {}s ago",
                    rules.rate_limit_secs
                )));
            }
        }
        Ok(None)
    }
}

/// What a delivery carries: a reload's alert, or an alert about the safety net.
#[derive(Clone, Copy)]
enum Message<'a> {
    Reload(&'a AlertData),
    Operator(&'a OperatorAlert),
}

/// One delivery to make: a channel, or for e-mail a channel and one recipient.
pub struct Route<'a> {
    /// `teams`, `webhook-1`, `email:ops@example.com`: the name in the journal.
    pub id: String,
    pub channel: &'a ChannelConfig,
    pub recipient: Option<String>,
}

/// The deliveries a channel makes for an event. E-mail: each configured recipient and, with
/// `appOwnerAlert`, the app owner (unless excluded or not included), each address once.
pub fn routes<'a>(channel: &'a ChannelConfig, data: &AlertData) -> Vec<Route<'a>> {
    let Target::Email(email) = &channel.target else {
        return vec![Route {
            id: channel.id.clone(),
            channel,
            recipient: None,
        }];
    };
    let mut recipients: Vec<String> = email.recipients.clone();
    if let Some(rules) = &email.owner_alert {
        let owner = data.app_owner_email.as_str();
        let listed = |list: &[String]| list.iter().any(|a| a.eq_ignore_ascii_case(owner));
        let included = rules.include_all || listed(&rules.include);
        if !owner.is_empty() && included && !listed(&rules.exclude) {
            recipients.push(owner.to_owned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    recipients
        .into_iter()
        .filter(|r| seen.insert(r.to_ascii_lowercase()))
        .map(|r| Route {
            id: format!("{}:{}", channel.id, r.to_ascii_lowercase()),
            channel,
            recipient: Some(r),
        })
        .collect()
}

/// How long ago the reload ended (its stop time as Qlik reported it), for the latency metric.
fn since_reload_end(data: &AlertData) -> Option<std::time::Duration> {
    let end = time::OffsetDateTime::parse(
        &data.execution_stop_time.utc,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let elapsed = time::OffsetDateTime::now_utc() - end;
    std::time::Duration::try_from(elapsed).ok()
}

/// What a channel would send for `data`, per delivery (e-mail: per recipient), as text a
/// person reads: the JSON pretty-printed, the e-mail's subject and HTML. For `preview`.
pub fn preview(channel: &ChannelConfig, data: &AlertData) -> Vec<(String, String)> {
    let channel_data = channel::channel_data(channel, data);
    routes(channel, data)
        .iter()
        .map(|route| {
            let text = match channel::render_reload(route.channel, &channel_data) {
                Ok((payload, fallback)) => {
                    let body = match serde_json::from_str::<serde_json::Value>(&payload.body) {
                        Ok(json) if !matches!(route.channel.target, Target::Console) => {
                            serde_json::to_string_pretty(&json).unwrap_or(payload.body)
                        }
                        _ => payload.body,
                    };
                    let subject = payload
                        .subject
                        .map(|s| format!("Subject: {s}\n\n"))
                        .unwrap_or_default();
                    let fallback = fallback
                        .map(|f| format!("(your template was not used: {f})\n"))
                        .unwrap_or_default();
                    format!("{fallback}{subject}{body}")
                }
                Err(e) => format!("(cannot be rendered: {e})"),
            };
            (route.id.clone(), text)
        })
        .collect()
}

/// `base`, doubling per attempt, capped at a minute.
fn backoff(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmailSettings, OwnerAlert, Priority};

    fn email_channel(recipients: &[&str], owner: Option<OwnerAlert>) -> ChannelConfig {
        let settings = EmailSettings {
            from: "q@example.com".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            subject: "s".into(),
            body_template: None,
            priority: Priority::High,
            owner_alert: owner,
        };
        ChannelConfig::new("email", Target::Email(settings))
    }

    fn recipients(c: &ChannelConfig, owner: &str) -> Vec<String> {
        let data = AlertData {
            app_owner_email: owner.into(),
            ..AlertData::default()
        };
        routes(c, &data)
            .into_iter()
            .map(|t| t.recipient.unwrap_or_default())
            .collect()
    }

    #[test]
    fn owner_include_and_exclude_lists() {
        let rules = |all: bool, include: &[&str], exclude: &[&str]| OwnerAlert {
            include_all: all,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        let c = email_channel(&["ops@x.com"], None);
        assert_eq!(
            recipients(&c, "ada@x.com"),
            ["ops@x.com"],
            "owner alert off"
        );
        let c = email_channel(&["ops@x.com"], Some(rules(true, &[], &[])));
        assert_eq!(recipients(&c, "ada@x.com"), ["ops@x.com", "ada@x.com"]);
        assert_eq!(recipients(&c, ""), ["ops@x.com"], "no owner e-mail known");
        let c = email_channel(&["ops@x.com"], Some(rules(true, &[], &["ADA@x.com"])));
        assert_eq!(
            recipients(&c, "ada@x.com"),
            ["ops@x.com"],
            "excluded, case-insensitively"
        );
        let c = email_channel(&[], Some(rules(false, &["bob@x.com"], &[])));
        assert!(
            recipients(&c, "ada@x.com").is_empty(),
            "not in the include list"
        );
        assert_eq!(recipients(&c, "bob@x.com"), ["bob@x.com"]);
        let c = email_channel(&["ada@x.com", "Ada@X.com"], Some(rules(true, &[], &[])));
        assert_eq!(
            recipients(&c, "ADA@x.com"),
            ["ada@x.com"],
            "each address once"
        );
        let ids: Vec<String> = routes(&c, &AlertData::default())
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["email:ada@x.com"]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 4), Duration::from_millis(800));
        assert_eq!(backoff(base, 40), Duration::from_secs(60));
    }
}
