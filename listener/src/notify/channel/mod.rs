//! The channels, one component each: a file per kind holds what is particular to it (its
//! built-in templates, its size limit and markup, how it renders a reload alert and an operator
//! alert, how it sends). This module is the one place that dispatches on the kind.
//!
//! Adding a channel: its `Target` variant and keys in `config::channel`, a file here, and an
//! arm in each `match` below (the compiler lists them).
//!
//! Promises: every kind renders both messages (tested for each kind in `notify::operator` and
//! `notify::render`); an attempt's outcome says whether another try could succeed.

mod console;
mod email;
mod file;
mod http;
mod mqtt;
mod slack;
mod teams;
mod webhook;

pub use email::{transport as smtp_transport, Smtp};

use super::operator::OperatorAlert;
use super::render::{self, Markup, RenderError};
use super::{AttemptError, Route};
use crate::alert::AlertData;
use crate::config::{ChannelConfig, ChannelKind, Target};
use relay_mqtt::Publish;
use serde_json::Value;
use std::sync::Arc;

/// The built-in reload templates, by file name (for checks).
#[cfg(test)]
pub const BUILT_IN: [(&str, &str); 4] = [
    ("teams-reload-failed", teams::TEMPLATE),
    ("slack-reload-failed", slack::TEMPLATE),
    ("email-reload-failed", email::TEMPLATE),
    ("console-reload-failed", console::TEMPLATE),
];

/// What one delivery sends: the JSON document, the console's text or the e-mail's HTML body.
#[derive(Debug)]
pub struct Payload {
    /// The e-mail's subject.
    pub subject: Option<String>,
    pub body: String,
}

impl Payload {
    fn json(body: &Value) -> Payload {
        Payload {
            subject: None,
            body: body.to_string(),
        }
    }

    fn text(body: String) -> Payload {
        Payload {
            subject: None,
            body,
        }
    }
}

/// How a kind of channel shows the alert data.
#[derive(Debug, Clone, Copy)]
pub struct Traits {
    /// Most characters of each script-log field it gets.
    pub script_log_limit: usize,
    /// People read it: Butler's numbers are shown grouped (`187,236,352`).
    pub for_people: bool,
    /// The markup values must not be able to write.
    pub markup: Markup,
    /// How a script log's line break is written so that the channel shows it.
    pub line_break: &'static str,
}

/// For machines: the alert data as a JSON document, whole.
const DOCUMENT: Traits = Traits {
    script_log_limit: crate::script_log::SCRIPT_LOG_FIELD_MAX,
    for_people: false,
    markup: Markup::Plain,
    line_break: "\n",
};

pub fn traits(kind: ChannelKind) -> Traits {
    match kind {
        ChannelKind::Teams => teams::TRAITS,
        ChannelKind::Slack => slack::TRAITS,
        ChannelKind::Email => email::TRAITS,
        ChannelKind::Console => console::TRAITS,
        ChannelKind::Webhook | ChannelKind::Mqtt | ChannelKind::File => DOCUMENT,
    }
}

/// The `kind` of the JSON document webhook, MQTT and file channels receive for a reload.
pub const RELOAD_KIND: &str = "qlik-cloud-reload-failed";

/// The document webhook, MQTT and file channels receive: `kind` says what `alert` holds.
fn document(kind: &str, data: &Value) -> Payload {
    Payload::json(&serde_json::json!({ "schemaVersion": 1, "kind": kind, "alert": data }))
}

/// The alert data as this channel sees it (JSON, for templates): its script-log lines, size
/// limits and options.
pub fn channel_data(channel: &ChannelConfig, data: &AlertData) -> Value {
    let mut d = data.clone();
    let traits = traits(channel.target.kind());
    let limit = traits.script_log_limit;
    let message = &channel.message;
    // Butler's meaning of `basicContentOnly`: no script log, and counts of 0.
    let (head, tail, counts) = if message.basic_content_only {
        (String::new(), String::new(), (0, 0))
    } else {
        let head = crate::script_log::first_lines(&data.script_log_head, message.head_lines);
        let tail = crate::script_log::last_lines(&data.script_log_tail, message.tail_lines);
        (
            crate::script_log::cut_end(&head, limit).replace('\n', traits.line_break),
            crate::script_log::cut_start(&tail, limit).replace('\n', traits.line_break),
            (message.head_lines, message.tail_lines),
        )
    };
    (d.script_log_head_count, d.script_log_tail_count) = counts;
    d.script_log_head = head;
    d.script_log_tail = tail;
    let mut value = serde_json::to_value(d).unwrap_or_default();
    // What people read shows Butler's numbers as Butler does; machine-readable bodies keep
    // numbers.
    if traits.for_people {
        for key in BUTLER_GROUPED {
            if let Some(n) = value.get(key).and_then(Value::as_u64) {
                value[key] = Value::String(render::grouped(n));
            }
        }
    }
    value
}

/// Butler's numbers that it formats for people (`toLocaleString()`).
const BUTLER_GROUPED: [&str; 4] = [
    "peakMemoryBytes",
    "rowLimit",
    "sizeMemoryBytes",
    "appFileSize",
];

/// A reload alert for `channel` from its [`channel_data`]; the second value says
/// why the user's template was not used (the built-in one was).
pub fn render_reload(
    channel: &ChannelConfig,
    data: &Value,
) -> Result<(Payload, Option<String>), RenderError> {
    match &channel.target {
        Target::Teams { .. } => teams::render(&channel.message, data),
        Target::Slack { .. } => slack::render(channel, data),
        Target::Email(settings) => email::render(settings, data),
        Target::Console => console::render(&channel.message, data),
        Target::Webhook { .. } | Target::Mqtt { .. } | Target::File(_) => {
            Ok((document(RELOAD_KIND, data), None))
        }
    }
}

/// An operator alert for `channel`, from the kind's own built-in template.
pub fn render_operator(
    channel: &ChannelConfig,
    alert: &OperatorAlert,
) -> Result<Payload, RenderError> {
    let data = serde_json::to_value(alert).unwrap_or(Value::Null);
    let failed = |e: String| RenderError::new(format!("operator alert: {e}"));
    match &channel.target {
        Target::Teams { .. } => teams::render_operator(&data).map_err(failed),
        Target::Slack { .. } => slack::render_operator(&channel.target, &data).map_err(failed),
        Target::Email(_) => email::render_operator(alert, &data).map_err(failed),
        Target::Console => console::render_operator(&data).map_err(failed),
        Target::Webhook { .. } | Target::Mqtt { .. } | Target::File(_) => {
            Ok(document(super::operator::KIND, &data))
        }
    }
}

/// What the channels send with, shared by all deliveries.
#[derive(Clone)]
pub struct Senders {
    pub http: reqwest::Client,
    /// For the MQTT channel: publishes on the listener's broker, PUBACK awaited.
    pub mqtt: Option<Arc<dyn Publish>>,
    /// For e-mail.
    pub smtp: Option<Smtp>,
    /// Serialises appends to file channels.
    pub file_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Senders {
    pub fn new(mqtt: Option<Arc<dyn Publish>>, smtp: Option<Smtp>) -> anyhow::Result<Senders> {
        Ok(Senders {
            http: http::client()?,
            mqtt,
            smtp,
            file_lock: Arc::default(),
        })
    }

    /// One try at sending `payload` on the route's channel.
    pub async fn send(
        &self,
        route: &Route<'_>,
        event_id: &str,
        payload: &Payload,
    ) -> Result<(), AttemptError> {
        let body = payload.body.as_str();
        match &route.channel.target {
            Target::Teams { url } | Target::Slack { url, .. } => {
                http::post(&self.http, url, body, None).await
            }
            Target::Webhook { url, secret } => {
                webhook::send(&self.http, url, secret.as_ref(), event_id, body).await
            }
            Target::Mqtt { topic } => mqtt::publish(self.mqtt.as_deref(), topic, body).await,
            Target::Email(settings) => {
                let to = route.recipient.as_deref();
                let subject = payload.subject.as_deref().unwrap_or_default();
                email::send(self.smtp.as_ref(), settings, to, subject, body).await
            }
            Target::Console => console::print(body),
            Target::File(path) => file::append(&self.file_lock, path, body).await,
        }
    }
}

#[cfg(test)]
mod tests;
