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
mod tests {
    use super::*;

    const TENANT: &str = "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../testdata/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn app_reload_failed_cloudevents() {
        let body = fixture("app-reload-failed.cloudevents.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.format, Format::CloudEvents);
        assert_eq!(e.id, "9b1f6a52-3c0e-4d7a-8f41-2e6d5c7b9a10");
        assert_eq!(e.event_type, APP_RELOAD_FINISHED);
        assert_eq!(e.tenant_id, TENANT);
        assert_eq!(e.time.as_deref(), Some("2026-11-20T06:14:52.301Z"));
        assert_eq!(e.source.as_deref(), Some("com.qlik/engine"));
        assert_eq!(e.owner_id.as_deref(), Some("65a1f0c2e4b0d1a2b3c4d5e6"));
        assert_eq!(e.space_id.as_deref(), Some("6511aa22bb33cc44dd55ee66"));
        assert_eq!(
            e.app_id().as_deref(),
            Some("4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f")
        );
        let ts = e.timestamp().unwrap();
        assert_eq!(ts.unix_timestamp(), 1_795_155_292);
        let r = e.reload().unwrap().unwrap();
        assert_eq!(r.reload_id.as_deref(), Some("673d9f1c2a4b5c6d7e8f9012"));
        assert_eq!(r.status.as_deref(), Some("error"));
        assert!(r.is_failure());
    }

    #[test]
    fn app_reload_failed_hybrid() {
        let body = fixture("app-reload-failed.legacy-hybrid.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.format, Format::Hybrid);
        assert_eq!(e.id, "0c7e2b44-91d3-4b5e-a6f7-38c9d0e1f2a3");
        assert_eq!(e.event_type, APP_RELOAD_FINISHED);
        assert_eq!(e.tenant_id, TENANT);
        assert_eq!(e.time.as_deref(), Some("2026-09-02T21:03:11.482Z"));
        // spaceid only exists in the legacy extensions here.
        assert_eq!(e.space_id.as_deref(), Some("6511aa22bb33cc44dd55ee66"));
        assert_eq!(
            e.app_id().as_deref(),
            Some("c2d3e4f5-a6b7-4c8d-9e0f-112233445566")
        );
        let r = e.reload().unwrap().unwrap();
        assert_eq!(r.reload_id.as_deref(), Some("66d63a0f9b8c7d6e5f4a3b2c"));
        assert!(r.is_failure());
    }

    #[test]
    fn app_reload_failed_legacy_only() {
        let body = fixture("app-reload-failed.legacy.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.format, Format::Legacy);
        assert_eq!(e.id, "7f3e9a10-2b4c-4d5e-9f60-718293a4b5c6");
        assert_eq!(e.event_type, APP_RELOAD_FINISHED);
        assert_eq!(e.tenant_id, TENANT);
        assert_eq!(e.time.as_deref(), Some("2026-09-02T21:03:11.482Z"));
        assert_eq!(e.user_id.as_deref(), Some("65a1f0c2e4b0d1a2b3c4d5e6"));
        assert_eq!(
            e.app_id().as_deref(),
            Some("c2d3e4f5-a6b7-4c8d-9e0f-112233445566")
        );
        assert!(e.reload().unwrap().unwrap().is_failure());
    }

    #[test]
    fn reloads_service_failed() {
        let body = fixture("reload-failed.cloudevents.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.format, Format::CloudEvents);
        assert_eq!(e.id, "e3a7c1d9-5b2f-4e60-8a19-7c4d2b6f0e85");
        assert_eq!(e.event_type, RELOAD_FINISHED);
        assert_eq!(e.time.as_deref(), Some("2026-11-21T02:00:41Z"));
        let r = e.reload().unwrap().unwrap();
        assert_eq!(r.reload_id.as_deref(), Some("673e95b1f0e1d2c3b4a59687"));
        assert_eq!(
            r.app_id.as_deref(),
            Some("8d7c6b5a-4e3f-4a1b-9c0d-aabbccddeeff")
        );
        assert_eq!(r.status.as_deref(), Some("FAILED"));
        assert!(r.is_failure());
    }

    #[test]
    fn app_reload_ok_is_not_a_failure() {
        let body = fixture("app-reload-ok.cloudevents.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.id, "5d1e2f3a-4b5c-4d6e-8f70-819203a4b5c6");
        let r = e.reload().unwrap().unwrap();
        assert_eq!(r.outcome, ReloadOutcome::Succeeded);
        assert!(!r.is_failure());
    }

    #[test]
    fn other_event_types_have_no_reload() {
        let body = fixture("app-created.cloudevents.json");
        let e = Event::parse(&body).unwrap();
        assert_eq!(e.event_type, "com.qlik.app.created");
        assert_eq!(e.id, "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d");
        assert_eq!(e.timestamp().unwrap().unix_timestamp(), 1_795_342_500);
        assert!(e.reload().is_none());
        assert_eq!(
            e.app_id().as_deref(),
            Some("0f9e8d7c-6b5a-4f3e-8d2c-1b0a99887766")
        );
    }

    #[test]
    fn reloads_service_status_table() {
        let cases = [
            (
                r#""status":"SUCCEEDED","succeeded":true"#,
                ReloadOutcome::Succeeded,
            ),
            (
                r#""status":"FAILED","succeeded":false"#,
                ReloadOutcome::Failed,
            ),
            (
                r#""status":"EXCEEDED_LIMIT","succeeded":false"#,
                ReloadOutcome::Failed,
            ),
            (
                r#""status":"CANCELED","succeeded":false"#,
                ReloadOutcome::Canceled,
            ),
            (r#""succeeded":false"#, ReloadOutcome::Failed),
            (r#""succeeded":true"#, ReloadOutcome::Succeeded),
            (r#""status":"QUEUED""#, ReloadOutcome::Unknown),
            (r#""id":"r1""#, ReloadOutcome::Unknown),
        ];
        for (data, want) in cases {
            let body = format!(
                r#"{{"id":"e","type":"{RELOAD_FINISHED}","tenantid":"t","data":{{{data}}}}}"#
            );
            let e = Event::parse(body.as_bytes()).unwrap();
            assert_eq!(e.reload().unwrap().unwrap().outcome, want, "{data}");
        }
    }

    #[test]
    fn app_reload_status_table() {
        for (status, want) in [
            (r#""ok""#, ReloadOutcome::Succeeded),
            (r#""error""#, ReloadOutcome::Failed),
            (r#""weird""#, ReloadOutcome::Unknown),
            ("null", ReloadOutcome::Unknown),
        ] {
            let body = format!(
                r#"{{"id":"e","type":"{APP_RELOAD_FINISHED}","tenantid":"t","data":{{"status":{status}}}}}"#
            );
            let e = Event::parse(body.as_bytes()).unwrap();
            assert_eq!(e.reload().unwrap().unwrap().outcome, want, "{status}");
        }
    }

    #[test]
    fn reload_with_malformed_data_is_an_error_but_the_event_parses() {
        let body = format!(
            r#"{{"id":"e","type":"{APP_RELOAD_FINISHED}","tenantid":"t","data":"not an object"}}"#
        );
        let e = Event::parse(body.as_bytes()).unwrap();
        assert!(matches!(e.reload(), Some(Err(EventError::BadData(_)))));
        // A field of an odd shape costs only itself: the outcome is unknown, not an error.
        let odd = format!(
            r#"{{"id":"e","type":"{APP_RELOAD_FINISHED}","tenantid":"t","data":{{"status":5,"reloadId":"r"}}}}"#
        );
        let r = Event::parse(odd.as_bytes())
            .unwrap()
            .reload()
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.reload_id.as_deref(), r.outcome),
            (Some("r"), ReloadOutcome::Unknown)
        );
        let no_data = format!(r#"{{"id":"e","type":"{APP_RELOAD_FINISHED}","tenantid":"t"}}"#);
        let e = Event::parse(no_data.as_bytes()).unwrap();
        assert_eq!(e.reload(), Some(Err(EventError::Missing("data"))));
        // Other types keep any data shape.
        let other = r#"{"id":"e","type":"x.y","tenantid":"t","data":[1,{"status":5}]}"#;
        assert!(Event::parse(other.as_bytes()).is_ok());
    }

    #[test]
    fn missing_required_fields() {
        let cases = [
            (
                r#"{"type":"t","tenantid":"x"}"#,
                "event id (`id` or `eventId`)",
            ),
            (
                r#"{"id":"","type":"t","tenantid":"x"}"#,
                "event id (`id` or `eventId`)",
            ),
            (
                r#"{"id":"1","tenantid":"x"}"#,
                "event type (`type` or `eventType`)",
            ),
            (
                r#"{"id":"1","type":"t"}"#,
                "tenant id (`tenantid` or `extensions.tenantId`)",
            ),
            (
                r#"{"id":"1","type":"t","tenantid":null}"#,
                "tenant id (`tenantid` or `extensions.tenantId`)",
            ),
            (
                r#"{"eventId":"1","eventType":"t","extensions":{}}"#,
                "tenant id (`tenantid` or `extensions.tenantId`)",
            ),
            ("{}", "event id (`id` or `eventId`)"),
        ];
        for (body, what) in cases {
            assert_eq!(
                Event::parse(body.as_bytes()).err(),
                Some(EventError::Missing(what)),
                "{body}"
            );
        }
    }

    #[test]
    fn hybrid_fields_must_agree() {
        let cases = [
            (
                r#"{"id":"1","eventId":"2","type":"t","tenantid":"x"}"#,
                "event id",
            ),
            (
                r#"{"id":"1","type":"a","eventType":"b","tenantid":"x"}"#,
                "event type",
            ),
            (
                r#"{"id":"1","type":"t","tenantid":"x","extensions":{"tenantId":"y"}}"#,
                "tenant id",
            ),
            (
                r#"{"id":"1","type":"t","tenantid":"x","time":"2026-01-01T00:00:00Z","eventTime":"2026-01-01T00:00:01Z"}"#,
                "event time",
            ),
            (
                r#"{"id":"1","type":"t","tenantid":"x","toplevelresourceid":"a","extensions":{"topLevelResourceId":"b"}}"#,
                "top-level resource id",
            ),
        ];
        for (body, what) in cases {
            assert_eq!(
                Event::parse(body.as_bytes()).err(),
                Some(EventError::Conflict(what)),
                "{body}"
            );
        }
        // Agreeing duplicates are fine.
        let ok = r#"{"id":"1","eventId":"1","type":"t","eventType":"t","tenantid":"x","extensions":{"tenantId":"x"}}"#;
        assert_eq!(Event::parse(ok.as_bytes()).unwrap().format, Format::Hybrid);
    }

    #[test]
    fn malformed_json() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"[1,2,3]",
            b"\"string\"",
            b"null",
            b"{\"id\":\"1\",\"type\":\"t\",\"tenantid\":\"x\"",
            b"{\"id\":1,\"type\":\"t\",\"tenantid\":\"x\"}",
            b"{\"id\":\"1\",\"type\":\"t\",\"tenantid\":\"x\",\"extensions\":\"s\"}",
            b"{\"id\":\"\xff\",\"type\":\"t\",\"tenantid\":\"x\"}",
            // Duplicate keys are ambiguous: refuse rather than guess which one counts.
            b"{\"id\":\"1\",\"id\":\"2\",\"type\":\"t\",\"tenantid\":\"x\"}",
            b"{\"id\":\"1\",\"type\":\"t\",\"tenantid\":\"x\",\"tenantid\":\"y\"}",
        ];
        for body in cases {
            match Event::parse(body) {
                Err(EventError::Json(reason)) => assert!(!reason.is_empty()),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        let depth = 100_000;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // In `data`, the envelope parse skips it without recursing; reading it as a reload
        // hits serde_json's recursion limit and reports bad data.
        let body = format!(
            r#"{{"id":"1","type":"{APP_RELOAD_FINISHED}","tenantid":"x","data":{{"status":{nested}}}}}"#
        );
        let e = Event::parse(body.as_bytes()).unwrap();
        assert!(matches!(e.reload(), Some(Err(EventError::BadData(_)))));
        // In a field we read, it is refused.
        let body = format!(r#"{{"id":"1","type":"t","tenantid":"x","extensions":{nested}}}"#);
        assert!(matches!(
            Event::parse(body.as_bytes()),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let body = br#"{"id":"a\u002fb","type":"t","tenantid":"x\"y"}"#;
        let e = Event::parse(body).unwrap();
        assert_eq!(e.id, "a/b");
        assert_eq!(e.tenant_id, "x\"y");
        // Only strings with escapes are copied; the rest borrow from the body.
        assert!(matches!(e.id, Cow::Owned(_)));
        assert!(matches!(e.event_type, Cow::Borrowed("t")));
    }

    #[test]
    fn plain_strings_borrow_from_the_body() {
        let body = fixture("app-reload-failed.legacy-hybrid.json");
        let e = Event::parse(&body).unwrap();
        for field in [
            Some(&e.id),
            Some(&e.event_type),
            Some(&e.tenant_id),
            e.time.as_ref(),
            e.source.as_ref(),
            e.user_id.as_ref(),
            e.owner_id.as_ref(),
            e.space_id.as_ref(),
            e.top_level_resource_id.as_ref(),
        ] {
            assert!(matches!(field, Some(Cow::Borrowed(_))), "{field:?}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let body = b"{\"id\":\"\xff\",\"type\":\"t\",\"tenantid\":\"x\"}";
        assert_eq!(
            Event::parse(body).unwrap_err().to_string(),
            "body is not a JSON event: not UTF-8 (at byte 7)"
        );
    }

    #[test]
    fn bad_time() {
        let body = br#"{"id":"1","type":"t","tenantid":"x","time":"yesterday"}"#;
        assert_eq!(
            Event::parse(body).unwrap().timestamp(),
            Err(EventError::BadTime)
        );
        let body = br#"{"id":"1","type":"t","tenantid":"x"}"#;
        assert_eq!(
            Event::parse(body).unwrap().timestamp(),
            Err(EventError::Missing("event time"))
        );
    }

    #[test]
    fn json_errors_do_not_echo_long_input() {
        let long = "A".repeat(10_000);
        let body = format!(r#"{{"id":{{"x":"{long}"}},"type":"t","tenantid":"x"}}"#);
        match Event::parse(body.as_bytes()) {
            Err(EventError::Json(reason)) => assert!(reason.len() <= 160, "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// Loosely documented fields: a number where text goes, a flag as a string, an object
    /// where a status goes. Before, each made the reload unreadable: recorded, never alerted.
    #[test]
    fn reload_fields_of_odd_shapes() {
        let event = |data: &str| {
            format!(
                r#"{{"specversion":"1.0","id":"e1","type":"{RELOAD_FINISHED}","source":"com.qlik/reloads","tenantid":"T","data":{data}}}"#
            )
        };
        let read = |data: &str| {
            let body = event(data);
            let e = Event::parse(body.as_bytes()).unwrap();
            e.reload().unwrap().unwrap()
        };
        let r = read(r#"{"id": 42, "succeeded": "false"}"#);
        assert_eq!(r.reload_id.as_deref(), Some("42"));
        assert_eq!(r.outcome, ReloadOutcome::Failed);
        assert!(r.is_final);
        let r = read(r#"{"id": "r1", "status": {"code": "FAILED"}, "succeeded": false}"#);
        assert_eq!((r.status, r.outcome), (None, ReloadOutcome::Failed));
        let r = read(r#"{"id": "r1", "succeeded": "TRUE", "appId": ["x"]}"#);
        assert_eq!((r.app_id, r.outcome), (None, ReloadOutcome::Succeeded));
        let r = read(r#"{"id": ["r1"]}"#);
        assert_eq!((r.reload_id, r.outcome), (None, ReloadOutcome::Unknown));
    }
}
