//! One typed view of a Qlik Cloud event, whichever format it came in.
//!
//! Qlik sends legacy events (`cloudEventsVersion` 0.1: `eventId`, `eventType`, `extensions.*`),
//! CloudEvents 1.0 (`specversion`, `id`, `type`, `tenantid`, …) and, during the migration,
//! "hybrid" events that carry both sets (design.md §2). Everything downstream reads [`Event`],
//! never the raw field names.
//!
//! Promises:
//! - parsing borrows from the body where it can and never changes it (the body is forwarded
//!   byte for byte);
//! - an event needs an id, a type and a tenant id; anything else missing is `None`;
//! - a hybrid event whose two sets of fields disagree is refused, not silently resolved;
//! - `data` is only looked at on demand ([`Event::reload`]), so unusual payloads of other event
//!   types are forwarded untouched.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `com.qlik.v1.app.reload.finished`, sent by the engine (`data.status` is `ok` or `error`).
pub const APP_RELOAD_FINISHED: &str = "com.qlik.v1.app.reload.finished";
/// `com.qlik.v1.reload.finished`, sent by the reloads service (`data.succeeded`, `data.status`).
pub const RELOAD_FINISHED: &str = "com.qlik.v1.reload.finished";

/// Which field set the event carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `cloudEventsVersion` 0.1 fields only.
    Legacy,
    /// Both sets (Qlik's migration period).
    Hybrid,
    /// CloudEvents 1.0 fields only.
    CloudEvents,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Legacy => "legacy",
            Format::Hybrid => "hybrid",
            Format::CloudEvents => "cloudevents",
        }
    }
}

/// Why a body is not a usable event. Messages are short and safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not a JSON event: {0}")]
    Json(String),
    #[error("event has no {0}")]
    Missing(&'static str),
    #[error("legacy and CloudEvents fields disagree on the {0}")]
    Conflict(&'static str),
    #[error("event time is not an RFC 3339 timestamp")]
    BadTime,
    #[error("reload event data is not as documented: {0}")]
    BadData(String),
}

/// A normalised Qlik Cloud event, borrowing from the body it was parsed from.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub format: Format,
    pub id: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub tenant_id: Cow<'a, str>,
    /// The event time as sent; see [`Event::timestamp`].
    pub time: Option<Cow<'a, str>>,
    pub source: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub owner_id: Option<Cow<'a, str>>,
    pub space_id: Option<Cow<'a, str>>,
    /// The top-level resource: for app events, the app id.
    pub top_level_resource_id: Option<Cow<'a, str>>,
    /// Legacy `eventTypeVersion` (e.g. `1.0.0`), or a CloudEvents `eventtypeversion` extension.
    pub event_type_version: Option<Cow<'a, str>>,
    data: Option<&'a RawValue>,
}

/// The fields of both formats that we read; everything else is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    // CloudEvents 1.0
    #[serde(borrow)]
    specversion: Option<Text<'a>>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow, rename = "type")]
    ce_type: Option<Text<'a>>,
    #[serde(borrow)]
    time: Option<Text<'a>>,
    #[serde(borrow)]
    source: Option<Text<'a>>,
    #[serde(borrow, rename = "tenantid")]
    tenant_id: Option<Text<'a>>,
    #[serde(borrow, rename = "userid")]
    user_id: Option<Text<'a>>,
    #[serde(borrow, rename = "ownerid")]
    owner_id: Option<Text<'a>>,
    #[serde(borrow, rename = "spaceid")]
    space_id: Option<Text<'a>>,
    #[serde(borrow, rename = "toplevelresourceid")]
    top_level_resource_id: Option<Text<'a>>,
    #[serde(borrow, rename = "eventtypeversion")]
    ce_event_type_version: Option<Text<'a>>,
    // Legacy (cloudEventsVersion 0.1)
    #[serde(borrow)]
    cloud_events_version: Option<Text<'a>>,
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
    #[serde(borrow)]
    event_type: Option<Text<'a>>,
    #[serde(borrow)]
    event_time: Option<Text<'a>>,
    #[serde(borrow)]
    event_type_version: Option<Text<'a>>,
    #[serde(borrow)]
    extensions: Option<Extensions<'a>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Extensions<'a> {
    #[serde(borrow)]
    tenant_id: Option<Text<'a>>,
    #[serde(borrow)]
    user_id: Option<Text<'a>>,
    #[serde(borrow)]
    owner_id: Option<Text<'a>>,
    #[serde(borrow)]
    space_id: Option<Text<'a>>,
    #[serde(borrow)]
    top_level_resource_id: Option<Text<'a>>,
}

/// A string member, borrowed from the body unless it contains escapes.
///
/// A plain `Option<Cow<'a, str>>` field would always be copied: serde borrows a `Cow` only when
/// it is the field's own type, not inside an `Option`. The copies cost about a fifth of the parse.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> Event<'a> {
    /// Parses and normalises a webhook body.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        // Checking UTF-8 once up front is cheaper than serde_json's check of each string.
        let body = std::str::from_utf8(body)
            .map_err(|e| EventError::Json(format!("not UTF-8 (at byte {})", e.valid_up_to())))?;
        let env: Envelope<'a> =
            serde_json::from_str(body).map_err(|e| EventError::Json(json_reason(&e)))?;
        let ext = env.extensions.unwrap_or_default();

        let has_ce = env.specversion.is_some() || env.id.is_some() || env.ce_type.is_some();
        let has_legacy = env.cloud_events_version.is_some()
            || env.event_id.is_some()
            || env.event_type.is_some();
        let format = match (has_ce, has_legacy) {
            (true, true) => Format::Hybrid,
            (false, true) => Format::Legacy,
            _ => Format::CloudEvents,
        };

        let id = required(
            pick("event id", env.id, env.event_id)?,
            "event id (`id` or `eventId`)",
        )?;
        let event_type = required(
            pick("event type", env.ce_type, env.event_type)?,
            "event type (`type` or `eventType`)",
        )?;
        let tenant_id = required(
            pick("tenant id", env.tenant_id, ext.tenant_id)?,
            "tenant id (`tenantid` or `extensions.tenantId`)",
        )?;
        Ok(Event {
            format,
            id,
            event_type,
            tenant_id,
            time: pick("event time", env.time, env.event_time)?,
            source: env.source.map(|t| t.0),
            user_id: pick("user id", env.user_id, ext.user_id)?,
            owner_id: pick("owner id", env.owner_id, ext.owner_id)?,
            space_id: pick("space id", env.space_id, ext.space_id)?,
            top_level_resource_id: pick(
                "top-level resource id",
                env.top_level_resource_id,
                ext.top_level_resource_id,
            )?,
            event_type_version: pick(
                "event type version",
                env.ce_event_type_version,
                env.event_type_version,
            )?,
            data: env.data,
        })
    }

    /// The event time, parsed.
    pub fn timestamp(&self) -> Result<OffsetDateTime, EventError> {
        let time = self
            .time
            .as_deref()
            .ok_or(EventError::Missing("event time"))?;
        OffsetDateTime::parse(time, &Rfc3339).map_err(|_| EventError::BadTime)
    }

    /// The raw `data` member, if any.
    pub fn data(&self) -> Option<&'a RawValue> {
        self.data
    }

    /// Whether `qlik-webhook send-test-event` made it (`data.qlikWebhookTest: true`): the
    /// listener alerts it as a test, without asking Qlik Cloud about an app that does not exist.
    pub fn is_test(&self) -> bool {
        #[derive(Deserialize)]
        struct Data {
            #[serde(rename = "qlikWebhookTest", default)]
            test: bool,
        }
        self.data
            .and_then(|d| serde_json::from_str::<Data>(d.get()).ok())
            .is_some_and(|d| d.test)
    }

    /// The outcome of a reload, for the two reload event types; `None` for any other type.
    pub fn reload(&self) -> Option<Result<Reload, EventError>> {
        match self.event_type.as_ref() {
            APP_RELOAD_FINISHED => Some(self.app_reload()),
            RELOAD_FINISHED => Some(self.reloads_service_reload()),
            _ => None,
        }
    }

    /// The app the event is about: the top-level resource, or `data.appId` for reload events.
    pub fn app_id(&self) -> Option<String> {
        if let Some(app) = &self.top_level_resource_id {
            return Some(app.to_string());
        }
        match self.reload() {
            Some(Ok(reload)) => reload.app_id,
            _ => None,
        }
    }

    fn app_reload(&self) -> Result<Reload, EventError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            #[serde(default, deserialize_with = "loose_text")]
            reload_id: Option<String>,
            #[serde(default, deserialize_with = "loose_text")]
            status: Option<String>,
        }
        let data: Data = self.parse_data()?;
        let outcome = match data.status.as_deref() {
            Some("ok") => ReloadOutcome::Succeeded,
            Some("error") => ReloadOutcome::Failed,
            _ => ReloadOutcome::Unknown,
        };
        Ok(Reload {
            reload_id: data.reload_id,
            app_id: self.top_level_resource_id.as_deref().map(str::to_owned),
            status: data.status,
            outcome,
            is_final: false,
        })
    }

    fn reloads_service_reload(&self) -> Result<Reload, EventError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            #[serde(default, deserialize_with = "loose_text")]
            id: Option<String>,
            #[serde(default, deserialize_with = "loose_text")]
            app_id: Option<String>,
            #[serde(default, deserialize_with = "loose_flag")]
            succeeded: Option<bool>,
            #[serde(default, deserialize_with = "loose_text")]
            status: Option<String>,
        }
        let data: Data = self.parse_data()?;
        let outcome = match (data.status.as_deref(), data.succeeded) {
            (Some("FAILED" | "EXCEEDED_LIMIT"), _) => ReloadOutcome::Failed,
            (Some("SUCCEEDED"), _) => ReloadOutcome::Succeeded,
            (Some("CANCELED"), _) => ReloadOutcome::Canceled,
            (_, Some(false)) => ReloadOutcome::Failed,
            (_, Some(true)) => ReloadOutcome::Succeeded,
            (_, None) => ReloadOutcome::Unknown,
        };
        Ok(Reload {
            reload_id: data.id,
            app_id: data
                .app_id
                .or_else(|| self.top_level_resource_id.as_deref().map(str::to_owned)),
            status: data.status,
            outcome,
            is_final: true,
        })
    }

    fn parse_data<T: serde::de::DeserializeOwned>(&self) -> Result<T, EventError> {
        let raw = self.data.ok_or(EventError::Missing("data"))?;
        serde_json::from_str(raw.get()).map_err(|e| EventError::BadData(json_reason(&e)))
    }
}

/// How a reload ended, read from either reload event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// `data.reloadId` (app reload) or `data.id` (reloads service).
    pub reload_id: Option<String>,
    pub app_id: Option<String>,
    /// The status as sent (`ok`/`error`, or `SUCCEEDED`/`FAILED`/`CANCELED`/`EXCEEDED_LIMIT`).
    pub status: Option<String>,
    pub outcome: ReloadOutcome,
    /// `com.qlik.v1.reload.finished`: the reload's final outcome, sent once. Otherwise
    /// (`com.qlik.v1.app.reload.finished`) the outcome of one attempt, which Qlik may retry.
    pub is_final: bool,
}

/// Text that may come as a number (`"reloadId": 42`); any other shape reads as absent, so one
/// odd field does not make the others unreadable.
fn loose_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A flag that may come as a string (`"succeeded": "false"`); any other shape reads as absent.
fn loose_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Succeeded,
    /// `status == "error"`, `FAILED`, `EXCEEDED_LIMIT`, or `succeeded == false` without a status.
    Failed,
    /// Stopped by a user: not a failure to alert on.
    Canceled,
    Unknown,
}

impl Reload {
    pub fn is_failure(&self) -> bool {
        self.outcome == ReloadOutcome::Failed
    }
}

/// Takes the CloudEvents value, or the legacy one; both present and different is a conflict.
fn pick<'a>(
    what: &'static str,
    ce: Option<Text<'a>>,
    legacy: Option<Text<'a>>,
) -> Result<Option<Cow<'a, str>>, EventError> {
    match (ce, legacy) {
        (Some(a), Some(b)) if a.0 != b.0 => Err(EventError::Conflict(what)),
        (Some(a), _) => Ok(Some(a.0)),
        (None, b) => Ok(b.map(|t| t.0)),
    }
}

fn required<'a>(
    value: Option<Cow<'a, str>>,
    what: &'static str,
) -> Result<Cow<'a, str>, EventError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(EventError::Missing(what)),
    }
}

/// serde_json's message without the echo of input it sometimes contains.
fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "truncated JSON".to_owned(),
        Category::Syntax => format!("invalid JSON at line {} column {}", e.line(), e.column()),
        Category::Io => "could not read the body".to_owned(),
        Category::Data => {
            let msg = e.to_string();
            // Keep "invalid type: integer `5`, expected a string at line 1 column 9" but cap
            // its length: it can quote the input.
            let mut end = msg.len().min(160);
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg[..end].to_owned()
        }
    }
}

#[cfg(test)]
mod tests;
