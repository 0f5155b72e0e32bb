//! The data a reload-failure alert is rendered from ([`AlertData`]), with Butler's variable
//! names.
//!
//! Why: Butler users have Teams, Slack and e-mail templates that use `appName`,
//! `scriptLogHead`, `executionDuration.hours` and so on (design.md §4). The data is built once
//! per event, here, from the event, the Qlik Cloud API's answers and the tenant's settings;
//! channels only render it. Pure: no I/O.
//!
//! Promises: every Butler variable is present. What the API could not tell is an empty string
//! (or 0), and `enrichmentErrors` lists what was unavailable, so an alert is degraded, never
//! lost. The event's `data` is read field by field: a field of an unexpected shape (an `errors`
//! item that is an object, a fractional duration, a number as a string) is read as well as it
//! can be or skipped with one debug line, never taking the other fields with it.

use super::enrich::Enrichment;
use super::local_time::{self, TimeForms};
pub use crate::alert::{AlertData, CreationTime, Duration, StartTime, StopTime, RELOAD_FAILED};
use crate::config::{GenericUrl, TenantConfig};
use crate::script_log::{cut_end, cut_start, ScriptLog, SCRIPT_LOG_FIELD_MAX};
use qlik_events::{Event, Reload};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

macro_rules! from_forms {
    ($($t:ident),*) => {$(
        impl From<TimeForms> for $t {
            fn from(f: TimeForms) -> $t {
                $t { utc: f.utc, local1: f.local1, local2: f.local2, local3: f.local3, local4: f.local4, local5: f.local5 }
            }
        }
    )*};
}
from_forms!(StartTime, StopTime, CreationTime);

/// The fields of `data` we use from either reload event type.
#[derive(Debug, Default)]
struct ReloadData {
    name: Option<String>,
    /// `app.reload.finished`: milliseconds.
    duration_ms: Option<u64>,
    /// `reload.finished`.
    duration_seconds: Option<u64>,
    end_time: Option<String>,
    start_time: Option<String>,
    creation_time: Option<String>,
    errors: Vec<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    peak_memory_bytes: Option<u64>,
    ended_with_memory_constraint: Option<bool>,
    trigger: Option<String>,
    task_id: Option<String>,
    partial: Option<bool>,
    is_direct_query_mode: Option<bool>,
    is_session_app: Option<bool>,
    is_skip_store: Option<bool>,
    row_limit: Option<u64>,
    size_memory: Option<u64>,
    status: Option<String>,
}

impl ReloadData {
    /// `self`, with what it lacks taken from `other`.
    fn or(self, other: ReloadData) -> ReloadData {
        ReloadData {
            name: self.name.or(other.name),
            duration_ms: self.duration_ms.or(other.duration_ms),
            duration_seconds: self.duration_seconds.or(other.duration_seconds),
            end_time: self.end_time.or(other.end_time),
            start_time: self.start_time.or(other.start_time),
            creation_time: self.creation_time.or(other.creation_time),
            errors: if self.errors.is_empty() {
                other.errors
            } else {
                self.errors
            },
            error_code: self.error_code.or(other.error_code),
            error_message: self.error_message.or(other.error_message),
            peak_memory_bytes: self.peak_memory_bytes.or(other.peak_memory_bytes),
            ended_with_memory_constraint: self
                .ended_with_memory_constraint
                .or(other.ended_with_memory_constraint),
            trigger: self.trigger.or(other.trigger),
            task_id: self.task_id.or(other.task_id),
            partial: self.partial.or(other.partial),
            is_direct_query_mode: self.is_direct_query_mode.or(other.is_direct_query_mode),
            is_session_app: self.is_session_app.or(other.is_session_app),
            is_skip_store: self.is_skip_store.or(other.is_skip_store),
            row_limit: self.row_limit.or(other.row_limit),
            size_memory: self.size_memory.or(other.size_memory),
            status: self.status.or(other.status),
        }
    }

    fn read(event: &Event<'_>) -> ReloadData {
        let event_id = event.id.as_ref();
        let Some(raw) = event.data() else {
            return ReloadData::default();
        };
        let map = match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(map)) => map,
            _ => {
                tracing::debug!(event_id, "the event's data is not an object; not read");
                return ReloadData::default();
            }
        };
        let f = Fields {
            map: &map,
            event_id,
        };
        ReloadData {
            name: f.text("name"),
            duration_ms: f.number("duration"),
            duration_seconds: f.number("durationSeconds"),
            end_time: f.text("endTime"),
            start_time: f.text("startTime"),
            creation_time: f.text("creationTime"),
            errors: f.messages("errors"),
            error_code: f.text("errorCode"),
            error_message: f.text("errorMessage"),
            peak_memory_bytes: f.number("peakMemoryBytes"),
            ended_with_memory_constraint: f.flag("endedWithMemoryConstraint"),
            trigger: f.text("type"),
            task_id: f.text("taskId"),
            partial: f.flag("partial").or_else(|| f.flag("isPartialReload")),
            is_direct_query_mode: f.flag("isDirectQueryMode"),
            is_session_app: f.flag("isSessionApp"),
            is_skip_store: f.flag("isSkipStore"),
            row_limit: f.number("rowLimit"),
            size_memory: f.nested("size").and_then(|size| size.number("memory")),
            status: f.text("status"),
        }
    }
}

/// Reads the fields of an event's `data` one by one, forgiving odd shapes.
struct Fields<'a> {
    map: &'a serde_json::Map<String, Value>,
    event_id: &'a str,
}

#[cfg(test)]
impl AlertData {
    fn start_time_local1(&self) -> &str {
        &self.execution_start_time.local1
    }
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The fields of the object at `key`.
    fn nested(&self, key: &str) -> Option<Fields<'_>> {
        match self.get(key)? {
            Value::Object(map) => Some(Fields {
                map,
                event_id: self.event_id,
            }),
            _ => self.skip(key),
        }
    }

    fn skip<T>(&self, key: &str) -> Option<T> {
        tracing::debug!(
            event_id = self.event_id,
            field = key,
            "a field of the event's data has an unexpected shape; skipped"
        );
        None
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => self.skip(key),
        }
    }

    /// A count or size: a whole number, a fraction (rounded) or a string holding one.
    fn number(&self, key: &str) -> Option<u64> {
        let n = match self.get(key)? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole)),
            Value::String(s) => s.trim().parse::<f64>().ok().and_then(whole),
            _ => None,
        };
        n.or_else(|| self.skip(key))
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => self.skip(key),
        }
    }

    /// A list of messages: strings, or objects with a message in them (Qlik documents `errors`
    /// loosely); one string is a list of one.
    fn messages(&self, key: &str) -> Vec<String> {
        let items = match self.get(key) {
            None => return Vec::new(),
            Some(Value::String(s)) => return vec![s.clone()],
            Some(Value::Array(items)) => items,
            Some(_) => return self.skip(key).unwrap_or_default(),
        };
        items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => ["message", "errorMessage", "text", "description"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
                    .or_else(|| Some(item.to_string())),
                _ => self.skip(key),
            })
            .collect()
    }
}

/// `f` as a whole number, if it is a finite, non-negative one (rounded).
fn whole(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
}

/// What the template data is built from.
pub struct Inputs<'a> {
    pub event: &'a Event<'a>,
    /// For a reload's final outcome: its latest failed attempt, whose data fills what the final
    /// event does not carry (duration in ms, memory, the engine's errors).
    pub attempt: Option<&'a Event<'a>>,
    pub reload: &'a Reload,
    pub tenant: &'a TenantConfig,
    pub enrichment: &'a Enrichment,
    pub generic_urls: &'a [GenericUrl],
    /// The time zone of the `…Local*` forms.
    pub time_zone: &'a jiff::tz::TimeZone,
}

/// Builds the alert data. `head`/`tail` are the most script-log lines any channel shows.
pub fn build(inputs: &Inputs<'_>, head: usize, tail: usize) -> AlertData {
    let Inputs {
        event,
        attempt,
        reload,
        tenant,
        enrichment,
        generic_urls,
        time_zone,
    } = *inputs;
    let data = match attempt {
        Some(attempt) => ReloadData::read(event).or(ReloadData::read(attempt)),
        None => ReloadData::read(event),
    };
    let info = enrichment.reload.clone().unwrap_or_default();
    let app = enrichment.app.clone().unwrap_or_default();
    let item = enrichment.item.clone().unwrap_or_default();
    let owner = enrichment.owner.clone().unwrap_or_default();
    let app_id = reload.app_id.clone().unwrap_or_default();
    let tenant_url = tenant.tenant_url.as_str().trim_end_matches('/').to_owned();

    let start = info.start_time.clone().or(data.start_time.clone());
    let stop = info
        .end_time
        .clone()
        .or(data.end_time.clone())
        .or(event.time.as_deref().map(str::to_owned));
    let between = |start: Option<&str>, stop: Option<&str>| {
        let secs = parse(stop)?.unix_timestamp() - parse(start)?.unix_timestamp();
        Some(secs.max(0) as u64)
    };
    // Butler's meaning: the reloads API's endTime − startTime; else the event's figures.
    let duration_secs = between(info.start_time.as_deref(), info.end_time.as_deref())
        .or(data.duration_ms.map(|ms| ms / 1000))
        .or(data.duration_seconds)
        .or_else(|| between(start.as_deref(), stop.as_deref()));
    // Without a start time, derive it from the stop time and the duration.
    let start = start.or_else(|| {
        let stop = parse(stop.as_deref())?;
        let d = time::Duration::seconds(duration_secs? as i64);
        (stop - d).format(&Rfc3339).ok()
    });

    let error_message = info
        .error_message
        .clone()
        .or(data.error_message.clone())
        .or_else(|| (!data.errors.is_empty()).then(|| data.errors.join("\n")))
        .unwrap_or_default();
    let log = enrichment
        .script_log
        .as_deref()
        .map(ScriptLog::new)
        .unwrap_or_default();
    let app_owner_id = app
        .owner_id
        .clone()
        .or(event.owner_id.as_deref().map(str::to_owned))
        .unwrap_or_default();
    let creation = info.creation_time.clone().or(data.creation_time.clone());

    AlertData {
        alert_title: RELOAD_FAILED.to_owned(),
        app_name: app.name.or(data.name).unwrap_or_default(),
        app_url: if app_id.is_empty() {
            String::new()
        } else {
            format!("{tenant_url}/sense/app/{app_id}")
        },
        app_id,
        app_description: app.description.unwrap_or_default(),
        app_tags: item.tags,
        app_owner_id: app_owner_id.clone(),
        app_owner_user_id: app_owner_id,
        // Butler's: `Unknown` when the owner could not be looked up.
        user_name: owner.name.clone().unwrap_or_else(|| "Unknown".to_owned()),
        app_owner_name: owner.name.unwrap_or_default(),
        app_owner_email: owner.email.unwrap_or_default(),
        app_owner_picture: owner.picture.unwrap_or_default(),
        app_has_section_access: app.has_section_access.unwrap_or_default(),
        app_is_published: app.published.unwrap_or_default(),
        app_publish_time: app.publish_time.unwrap_or_default(),
        app_thumbnail: app.thumbnail.unwrap_or_default(),
        app_file_size: item.app_file_size.unwrap_or_default(),
        user_id: event.user_id.as_deref().unwrap_or_default().to_owned(),
        source: event.source.as_deref().unwrap_or_default().to_owned(),
        tenant_id: event.tenant_id.to_string(),
        tenant_url,
        tenant_comment: tenant.comment.clone().unwrap_or_default(),
        event_id: event.id.to_string(),
        event_type: event.event_type.to_string(),
        event_type_version: event
            .event_type_version
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
        execution_start_time: local_time::forms(start.as_deref(), time_zone).into(),
        execution_stop_time: local_time::forms(stop.as_deref(), time_zone).into(),
        execution_creation_time: local_time::forms(creation.as_deref(), time_zone).into(),
        execution_duration: duration_fields(duration_secs),
        reload_trigger: info.trigger.or(data.trigger).unwrap_or_default(),
        reload_id: reload.reload_id.clone().unwrap_or_default(),
        task_id: data.task_id.unwrap_or_default(),
        is_direct_query_mode: data.is_direct_query_mode.unwrap_or_default(),
        is_session_app: data.is_session_app.unwrap_or_default(),
        is_skip_store: data.is_skip_store.unwrap_or_default(),
        row_limit: data.row_limit.unwrap_or_default(),
        size_memory_bytes: data.size_memory.unwrap_or_default(),
        usage_duration: data.duration_ms.unwrap_or_default(),
        status: data.status.clone().unwrap_or_default(),
        statements: Vec::new(),
        is_partial_reload: data.partial.unwrap_or_default(),
        creation_time: creation.unwrap_or_default(),
        error_code: info.error_code.or(data.error_code).unwrap_or_default(),
        error_message,
        // Butler's meaning: the reloads API's status (`FAILED`), else the event's.
        execution_status_text: info
            .status
            .clone()
            .or(reload.status.clone())
            .unwrap_or_default(),
        peak_memory_bytes: data.peak_memory_bytes.unwrap_or_default(),
        ended_with_memory_constraint: data.ended_with_memory_constraint.unwrap_or_default(),
        qlik_sense_qmc: tenant.qmc_url.clone().unwrap_or_default(),
        qlik_sense_hub: tenant.hub_url.clone().unwrap_or_default(),
        // The reloads API's `log` can be megabytes: its end (where the error is), bounded like
        // the script-log fields.
        log_message: cut_start(&info.log.unwrap_or_default(), SCRIPT_LOG_FIELD_MAX),
        script_log_size: log.line_count(),
        script_log_size_rows: log.line_count(),
        script_log_size_characters: log.characters,
        script_log_size_bytes: log.bytes,
        script_log_line_count: log.line_count(),
        script_log_head: cut_end(&log.head(head), SCRIPT_LOG_FIELD_MAX),
        script_log_head_count: head.min(log.line_count()),
        script_log_tail: cut_start(&log.tail(tail), SCRIPT_LOG_FIELD_MAX),
        script_log_tail_count: tail.min(log.line_count()),
        script_log_available: enrichment.script_log.is_some(),
        generic_urls: generic_urls.to_vec(),
        enrichment_errors: enrichment.errors.clone(),
        alert_note: String::new(),
    }
}

fn parse(t: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t?, &Rfc3339).ok()
}

fn duration_fields(secs: Option<u64>) -> Duration {
    match secs {
        Some(s) => Duration {
            hours: s / 3600,
            minutes: (s % 3600) / 60,
            seconds: s % 60,
            total_seconds: Some(s),
        },
        None => Duration::default(),
    }
}

#[cfg(test)]
mod tests;
