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

use crate::config::{ChannelConfig, ChannelKind, SmtpConfig, SmtpSecurity};
use crate::journal::{Delivery, DeliveryState, Journal, JournalError};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
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
    /// For e-mail.
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// Serialises appends to file channels.
    file_lock: Arc<tokio::sync::Mutex<()>>,
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
        smtp: Option<&SmtpConfig>,
    ) -> anyhow::Result<Notifier> {
        let smtp = smtp.map(smtp_transport).transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("qlik-listener/", env!("CARGO_PKG_VERSION")))
            // A redirect is not a delivery: 301/302/303 would be followed as a GET without
            // the alert, 307/308 would send it to a host nobody configured. The 3xx is
            // answered as a failure naming where it pointed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Notifier {
            http,
            journal,
            give_up,
            retry_base,
            mqtt,
            smtp,
            file_lock: Arc::default(),
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
        let targets: Vec<Target<'_>> = channels.iter().flat_map(|c| targets(c, data)).collect();
        let deliveries = targets
            .iter()
            .map(|target| self.deliver(event_id, target, data));
        let results = futures_util::future::join_all(deliveries).await;
        results.into_iter().collect()
    }

    async fn deliver(
        &self,
        event_id: &str,
        target: &Target<'_>,
        data: &Value,
    ) -> Result<(), JournalError> {
        let channel = target.channel;
        let target_id = target.id.as_str();
        let mut delivery = match self.journal.delivery(event_id, target_id).await? {
            Some(d) if d.state.is_final() => return Ok(()),
            Some(d) => d,
            None => {
                let d = Delivery {
                    event_id: event_id.to_owned(),
                    channel: target.id.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    last_error: None,
                };
                // Rules are decided once, when the delivery is first recorded. A rate limit's
                // slot is taken together with recording `d`, so a restart does not suppress
                // this event for its own slot.
                if let Some(reason) = self.suppression(target, data, &d).await? {
                    tracing::info!(event_id, channel = target_id, reason = %reason, "alert suppressed");
                    return self
                        .finish(Delivery {
                            state: DeliveryState::Suppressed,
                            last_error: Some(reason),
                            ..d
                        })
                        .await;
                }
                // Otherwise recorded with its first attempt (`sending`), just below.
                d
            }
        };

        let channel_data = render::channel_data(channel, data);
        let payload = match payload(target, &channel_data) {
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
                return self.finish(delivery).await;
            }
        };

        let deadline = tokio::time::Instant::now() + self.give_up;
        loop {
            delivery.attempts += 1;
            delivery.state = DeliveryState::Sending;
            self.journal.set_delivery(delivery.clone()).await?;
            let outcome = self.attempt(target, event_id, &payload).await;
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
                    return self.finish(delivery).await;
                }
                Err(AttemptError::Permanent(reason)) => {
                    tracing::error!(event_id, channel = target_id, error = %reason, "alert refused by the receiver; giving up");
                    delivery.state = DeliveryState::Failed;
                    delivery.last_error = Some(reason);
                    return self.finish(delivery).await;
                }
                Err(AttemptError::Retry(reason)) => {
                    let wait = backoff(self.retry_base, delivery.attempts);
                    if tokio::time::Instant::now() + wait > deadline {
                        tracing::error!(event_id, channel = target_id, attempts = delivery.attempts, error = %reason, "alert not delivered within the give-up time");
                        delivery.state = DeliveryState::Failed;
                        delivery.last_error = Some(reason);
                        return self.finish(delivery).await;
                    }
                    tracing::debug!(event_id, channel = target_id, error = %reason, "alert attempt failed; retrying");
                    delivery.state = DeliveryState::Pending;
                    delivery.last_error = Some(reason);
                    self.journal.set_delivery(delivery.clone()).await?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn send_email(
        &self,
        target: &Target<'_>,
        email: &render::RenderedEmail,
    ) -> Result<(), AttemptError> {
        use lettre::message::header::{
            ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
        };
        use lettre::message::{Mailbox, SinglePart};
        let (Some(smtp), Some(settings), Some(to)) =
            (&self.smtp, &target.channel.email, &target.recipient)
        else {
            return Err(AttemptError::Permanent("no SMTP server configured".into()));
        };
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| AttemptError::Permanent(format!("fromAddress: {e}")))?;
        let to: Mailbox = to
            .parse()
            .map_err(|e| AttemptError::Permanent(format!("recipient: {e}")))?;
        let (x_priority, importance) = match settings.priority.as_str() {
            "high" => ("1 (Highest)", "High"),
            "low" => ("5 (Lowest)", "Low"),
            _ => ("3 (Normal)", "Normal"),
        };
        let message = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(email.subject.clone())
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Priority"),
                x_priority.into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Importance"),
                importance.into(),
            ))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .header(ContentTransferEncoding::Base64)
                    .body(email.html.clone()),
            )
            .map_err(|e| AttemptError::Permanent(format!("cannot build the e-mail: {e}")))?;
        match smtp.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(AttemptError::Permanent(format!("SMTP: {e}"))),
            Err(e) => Err(AttemptError::Retry(format!("SMTP: {e}"))),
        }
    }

    /// Appends `body` as one line to the file channel's file, synced before it counts as sent.
    async fn append(&self, path: &std::path::Path, body: &str) -> Result<(), AttemptError> {
        use std::io::Write as _;
        // One writer at a time, so concurrent alerts never interleave within a line.
        let _turn = self.file_lock.lock().await;
        let mut line = String::with_capacity(body.len() + 1);
        line.push_str(body);
        line.push('\n');
        let file_path = path.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file_path)?;
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AttemptError::Retry(format!(
                "cannot append to {}: {e}",
                path.display()
            ))),
            Err(e) => Err(AttemptError::Retry(format!("file writer failed: {e}"))),
        }
    }

    /// Records a delivery's final state (and counts it for `/metrics`).
    async fn finish(&self, delivery: Delivery) -> Result<(), JournalError> {
        crate::metrics::METRICS.alert(&delivery.channel, delivery.state.as_str());
        self.journal.set_delivery(delivery).await
    }

    /// Whether the rules say not to send: tag gating, then the rate limit (whose slot, when
    /// free, is taken with `pending` recorded).
    async fn suppression(
        &self,
        target: &Target<'_>,
        data: &Value,
        pending: &Delivery,
    ) -> Result<Option<String>, JournalError> {
        let channel = target.channel;
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
            // Per app and channel; for e-mail, per app and recipient.
            let key = format!("{}:{app}", target.id);
            let window_ms = (channel.rate_limit_secs * 1000) as i64;
            let claimed = self
                .journal
                .claim_rate_slot(&key, window_ms, pending.clone())
                .await?;
            if !claimed {
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
        target: &Target<'_>,
        event_id: &str,
        payload: &Payload,
    ) -> Result<(), AttemptError> {
        let channel = target.channel;
        let body = match payload {
            Payload::Json(body) => body.as_str(),
            Payload::Email(email) => return self.send_email(target, email).await,
            Payload::Text(text) => {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                return writeln!(out, "{text}")
                    .and_then(|()| out.flush())
                    .map_err(|e| AttemptError::Retry(format!("cannot write to stdout: {e}")));
            }
        };
        if let Some(path) = &channel.file {
            return self.append(path, body).await;
        }
        if let Some(topic) = &channel.topic {
            let Some(mqtt) = &self.mqtt else {
                return Err(AttemptError::Permanent(
                    "no MQTT connection for alerts".into(),
                ));
            };
            let message = Message::new(topic, body.as_bytes());
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
            Ok(resp) if resp.status().is_redirection() => Err(AttemptError::Permanent(format!(
                "HTTP {} redirect to {}: alerts are not sent on to another URL; configure the final URL",
                resp.status().as_u16(),
                redirect_target(&resp)
            ))),
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

/// Where a redirect pointed, without its query (which may hold a token), for the error.
fn redirect_target(resp: &reqwest::Response) -> String {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    match location.map(|l| resp.url().join(l)) {
        Some(Ok(mut url)) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        Some(Err(_)) => "an unreadable Location".into(),
        None => "nowhere (no Location)".into(),
    }
}

/// The SMTP client for `Butler.emailNotification.smtp`.
fn smtp_transport(c: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    if c.accept_invalid_certs {
        tracing::warn!("Butler.emailNotification.smtp.tls.rejectUnauthorized is false: the SMTP server's certificate is NOT verified");
    }
    let name = c.server_name.clone().unwrap_or_else(|| c.host.clone());
    let params = || {
        TlsParameters::builder(name.clone())
            .dangerous_accept_invalid_certs(c.accept_invalid_certs)
            .build_rustls()
    };
    let tls = match c.security {
        SmtpSecurity::Implicit => Tls::Wrapper(params()?),
        SmtpSecurity::StartTls => Tls::Required(params()?),
        SmtpSecurity::Opportunistic => Tls::Opportunistic(params()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
        .port(c.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(20)));
    if let Some((user, password)) = &c.credentials {
        let password = String::from_utf8_lossy(password.expose()).into_owned();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// One delivery to make: a channel, or for e-mail a channel and one recipient.
pub struct Target<'a> {
    /// `teams`, `webhook-1`, `email:ops@example.com`: the name in the journal.
    pub id: String,
    pub channel: &'a ChannelConfig,
    pub recipient: Option<String>,
}

/// The deliveries a channel makes for an event. E-mail: each configured recipient and, with
/// `appOwnerAlert`, the app owner (unless excluded or not included), each address once.
pub fn targets<'a>(channel: &'a ChannelConfig, data: &Value) -> Vec<Target<'a>> {
    let Some(email) = &channel.email else {
        return vec![Target {
            id: channel.id.clone(),
            channel,
            recipient: None,
        }];
    };
    let mut recipients: Vec<String> = email.recipients.clone();
    if let (Some(rules), Some(owner)) = (&email.owner_alert, data["appOwnerEmail"].as_str()) {
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
        .map(|r| Target {
            id: format!("{}:{}", channel.id, r.to_ascii_lowercase()),
            channel,
            recipient: Some(r),
        })
        .collect()
}

/// What is sent.
enum Payload {
    Json(String),
    /// The console channel's text.
    Text(String),
    Email(render::RenderedEmail),
}

/// Renders the target's payload; the second value says why a user template was not used.
fn payload(
    target: &Target<'_>,
    data: &Value,
) -> Result<(Payload, Option<String>), render::RenderError> {
    match &target.channel.email {
        Some(settings) => {
            let mut email = render::render_email(settings, data)?;
            let fallback = email.fallback.take();
            Ok((Payload::Email(email), fallback))
        }
        None if target.channel.kind == ChannelKind::Console => {
            let (text, fallback) = render::render_console(target.channel, data)?;
            Ok((Payload::Text(text), fallback))
        }
        None => {
            let rendered = render::render(target.channel, data)?;
            Ok((Payload::Json(rendered.body.to_string()), rendered.fallback))
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
    use crate::config::{EmailSettings, OwnerAlert};

    fn email_channel(recipients: &[&str], owner: Option<OwnerAlert>) -> ChannelConfig {
        ChannelConfig {
            email: Some(EmailSettings {
                from: "q@example.com".into(),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                subject: "s".into(),
                body_template: None,
                priority: "high".into(),
                owner_alert: owner,
            }),
            ..ChannelConfig::new("email", ChannelKind::Email)
        }
    }

    fn recipients(c: &ChannelConfig, owner: &str) -> Vec<String> {
        targets(c, &serde_json::json!({ "appOwnerEmail": owner }))
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
        let ids: Vec<String> = targets(&c, &serde_json::json!({}))
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
