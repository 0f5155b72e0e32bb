//! The data a reload-failure alert is rendered from, with Butler's variable names.
//!
//! Why: Butler users have Teams, Slack and e-mail templates that use `appName`,
//! `scriptLogHead`, `executionDuration.hours` and so on (design.md §4). The data is built once
//! per event, here, from the event, the Qlik Cloud API's answers and the tenant's settings;
//! channels only render it. Pure: no I/O.
//!
//! Promise: every Butler variable is present. What the API could not tell is an empty string
//! (or 0), and `enrichmentErrors` lists what was unavailable, so an alert is degraded, never lost.

use crate::config::{GenericUrl, TenantConfig};
use crate::notify::render::{cut_end, cut_start, SCRIPT_LOG_FIELD_MAX};
use crate::qlik_api::{AppInfo, ReloadInfo, UserInfo};
use qlik_events::{Event, Reload};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What the Qlik Cloud API told about an event; `None` where a call failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub reload: Option<ReloadInfo>,
    pub app: Option<AppInfo>,
    pub owner: Option<UserInfo>,
    pub tags: Option<Vec<String>>,
    pub script_log: Option<String>,
    /// One line per failed lookup, e.g. `GET /api/v1/apps/…: HTTP 404`.
    pub errors: Vec<String>,
}

/// The fields of `data` we use from either reload event type.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReloadData {
    name: Option<String>,
    duration: Option<u64>,
    duration_seconds: Option<u64>,
    end_time: Option<String>,
    start_time: Option<String>,
    errors: Option<Vec<String>>,
    error_code: Option<String>,
    error_message: Option<String>,
    peak_memory_bytes: Option<u64>,
    ended_with_memory_constraint: Option<bool>,
    #[serde(rename = "type")]
    trigger: Option<String>,
}

/// The script log split into lines (CRLF or LF), ready for head/tail per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptLog {
    lines: Vec<String>,
    bytes: usize,
}

impl ScriptLog {
    pub fn new(text: &str) -> ScriptLog {
        let lines = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        ScriptLog {
            lines,
            bytes: text.len(),
        }
    }

    /// The first `n` lines, joined with `\n`.
    pub fn head(&self, n: usize) -> String {
        self.lines
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `n` lines, joined with `\n`.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }
}

/// What the template data is built from.
pub struct Inputs<'a> {
    pub event: &'a Event<'a>,
    pub reload: &'a Reload,
    pub tenant: &'a TenantConfig,
    pub enrichment: &'a Enrichment,
    pub generic_urls: &'a [GenericUrl],
}

/// Builds the template data. `head`/`tail` are the channel's script-log line counts.
pub fn build(inputs: &Inputs<'_>, head: usize, tail: usize) -> Value {
    let Inputs {
        event,
        reload,
        tenant,
        enrichment,
        generic_urls,
    } = *inputs;
    let data: ReloadData = event
        .data()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let info = enrichment.reload.clone().unwrap_or_default();
    let app = enrichment.app.clone().unwrap_or_default();
    let owner = enrichment.owner.clone().unwrap_or_default();
    let app_id = reload.app_id.clone().unwrap_or_default();
    let tenant_url = tenant.tenant_url.as_str().trim_end_matches('/').to_owned();

    let start = info.start_time.clone().or(data.start_time.clone());
    let stop = info
        .end_time
        .clone()
        .or(data.end_time.clone())
        .or(event.time.as_deref().map(str::to_owned));
    let duration_secs = data
        .duration
        .map(|ms| ms / 1000)
        .or(data.duration_seconds)
        .or_else(|| {
            Some(
                parse(stop.as_deref())?.unix_timestamp()
                    - parse(start.as_deref())?.unix_timestamp(),
            )
            .map(|s| s.max(0) as u64)
        });
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
        .or_else(|| {
            data.errors
                .as_ref()
                .filter(|e| !e.is_empty())
                .map(|e| e.join("\n"))
        })
        .unwrap_or_default();
    let log = enrichment
        .script_log
        .as_deref()
        .map(ScriptLog::new)
        .unwrap_or_default();

    json!({
        "appName": app.name.or(data.name).unwrap_or_default(),
        "appId": app_id,
        "appDescription": app.description.unwrap_or_default(),
        "appUrl": if app_id.is_empty() { String::new() } else { format!("{tenant_url}/sense/app/{app_id}") },
        "appTags": enrichment.tags.clone().unwrap_or_default(),
        "appOwnerId": app.owner_id.or(event.owner_id.as_deref().map(str::to_owned)).unwrap_or_default(),
        "appOwnerName": owner.name.unwrap_or_default(),
        "appOwnerEmail": owner.email.unwrap_or_default(),
        "tenantId": event.tenant_id.as_ref(),
        "tenantUrl": tenant_url,
        "tenantComment": tenant.comment.clone().unwrap_or_default(),
        "eventId": event.id.as_ref(),
        "eventType": event.event_type.as_ref(),
        "executionStartTime": time_fields(start.as_deref(), "startTime"),
        "executionStopTime": time_fields(stop.as_deref(), "stopTime"),
        "executionDuration": duration_fields(duration_secs),
        "reloadTrigger": info.trigger.or(data.trigger).unwrap_or_default(),
        "reloadId": reload.reload_id.clone().unwrap_or_default(),
        "errorCode": info.error_code.or(data.error_code).unwrap_or_default(),
        "errorMessage": error_message,
        "executionStatusText": reload.status.clone().unwrap_or_default(),
        "peakMemoryBytes": data.peak_memory_bytes.unwrap_or_default(),
        "endedWithMemoryConstraint": data.ended_with_memory_constraint.unwrap_or_default(),
        "qlikSenseQMC": tenant.qmc_url.clone().unwrap_or_default(),
        "qlikSenseHub": tenant.hub_url.clone().unwrap_or_default(),
        "logMessage": info.log.unwrap_or_default(),
        "scriptLogSize": log.bytes,
        "scriptLogLineCount": log.line_count(),
        "scriptLogHead": cut_end(&log.head(head), SCRIPT_LOG_FIELD_MAX),
        "scriptLogHeadCount": head.min(log.line_count()),
        "scriptLogTail": cut_start(&log.tail(tail), SCRIPT_LOG_FIELD_MAX),
        "scriptLogTailCount": tail.min(log.line_count()),
        "scriptLogAvailable": enrichment.script_log.is_some(),
        "genericUrls": generic_urls,
        "enrichmentErrors": enrichment.errors,
    })
}

fn parse(t: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t?, &Rfc3339).ok()
}

/// Butler's `…TimeLocal1` is `YYYY-MM-DD hh:mm:ss`; we give UTC, and say so in `…UTC`.
fn time_fields(t: Option<&str>, prefix: &str) -> Value {
    let (local1, utc) = match parse(t) {
        Some(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            let local1 = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            (local1, t.format(&Rfc3339).unwrap_or_default())
        }
        None => (String::new(), String::new()),
    };
    json!({ format!("{prefix}Local1"): local1, format!("{prefix}UTC"): utc })
}

fn duration_fields(secs: Option<u64>) -> Value {
    match secs {
        Some(s) => {
            json!({ "hours": s / 3600, "minutes": (s % 3600) / 60, "seconds": s % 60, "totalSeconds": s })
        }
        None => json!({ "hours": 0, "minutes": 0, "seconds": 0, "totalSeconds": Value::Null }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantRef;
    use qlik_events::Secret;

    fn tenant() -> TenantConfig {
        TenantConfig {
            path: "t".into(),
            id: TenantRef::Id("Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG".into()),
            tenant_url: url::Url::parse("https://acme.eu.qlikcloud.com").unwrap(),
            token: Secret::new("token"),
            qmc_url: Some("https://acme.eu.qlikcloud.com/console".into()),
            hub_url: Some("https://acme.eu.qlikcloud.com/hub".into()),
            comment: Some("Production".into()),
            webhook_secret: None,
            webhook_secret_previous: None,
            channels: vec![],
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../testdata/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn script_log() -> String {
        String::from_utf8(fixture("script-log.txt")).unwrap()
    }

    #[test]
    fn app_reload_failure_with_full_enrichment() {
        let body = fixture("app-reload-failed.cloudevents.json");
        let event = Event::parse(&body).unwrap();
        let reload = event.reload().unwrap().unwrap();
        let enrichment = Enrichment {
            reload: Some(ReloadInfo {
                trigger: Some("chronos".into()),
                status: Some("FAILED".into()),
                start_time: Some("2026-11-20T06:14:04.090Z".into()),
                end_time: Some("2026-11-20T06:14:52.120Z".into()),
                error_code: Some("EngineReloadFailed".into()),
                error_message: Some("Field \"Amount\" not found".into()),
                log: Some("Error: Field \"Amount\" not found".into()),
            }),
            app: Some(AppInfo {
                name: Some("Sales forecast – EMEA".into()),
                description: Some("Forecast".into()),
                owner_id: Some("65a1f0c2e4b0d1a2b3c4d5e6".into()),
            }),
            owner: Some(UserInfo {
                name: Some("Ada Lovelace".into()),
                email: Some("ada@example.com".into()),
                tenant_id: None,
            }),
            tags: Some(vec!["alert".into()]),
            script_log: Some(script_log()),
            errors: vec![],
        };
        let urls = [GenericUrl {
            id: "ops".into(),
            link_text: "Runbook".into(),
            url: "https://wiki/x".into(),
        }];
        let tenant = tenant();
        let inputs = Inputs {
            event: &event,
            reload: &reload,
            tenant: &tenant,
            enrichment: &enrichment,
            generic_urls: &urls,
        };
        let d = build(&inputs, 2, 3);
        assert_eq!(
            d["genericUrls"],
            json!([{"id": "ops", "linkText": "Runbook", "url": "https://wiki/x"}])
        );
        assert_eq!(d["appName"], "Sales forecast – EMEA");
        assert_eq!(d["appId"], "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f");
        assert_eq!(
            d["appUrl"],
            "https://acme.eu.qlikcloud.com/sense/app/4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f"
        );
        assert_eq!(d["appOwnerName"], "Ada Lovelace");
        assert_eq!(d["appOwnerEmail"], "ada@example.com");
        assert_eq!(d["appTags"], json!(["alert"]));
        assert_eq!(d["tenantId"], "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG");
        assert_eq!(d["tenantComment"], "Production");
        assert_eq!(d["reloadId"], "673d9f1c2a4b5c6d7e8f9012");
        assert_eq!(d["reloadTrigger"], "chronos");
        assert_eq!(d["errorCode"], "EngineReloadFailed");
        assert_eq!(d["errorMessage"], "Field \"Amount\" not found");
        assert_eq!(d["executionStatusText"], "error");
        assert_eq!(
            d["executionStartTime"]["startTimeLocal1"],
            "2026-11-20 06:14:04"
        );
        assert_eq!(
            d["executionStopTime"]["stopTimeLocal1"],
            "2026-11-20 06:14:52"
        );
        // data.duration is 48211 ms.
        assert_eq!(
            d["executionDuration"],
            json!({"hours": 0, "minutes": 0, "seconds": 48, "totalSeconds": 48})
        );
        assert_eq!(d["peakMemoryBytes"], 187236352);
        assert_eq!(d["endedWithMemoryConstraint"], false);
        assert_eq!(d["qlikSenseHub"], "https://acme.eu.qlikcloud.com/hub");
        assert_eq!(d["scriptLogHead"], "2026-11-20 06:14:04 0002 Execution started.\n2026-11-20 06:14:04 0003 Qlik Cloud Engine version 14.1.2");
        assert_eq!(
            d["scriptLogTail"],
            "2026-11-20 06:14:51 0007 Error: Field \"Amount\" not found \\ (see `Orders`)\n2026-11-20 06:14:52 0008 Execution Failed\n2026-11-20 06:14:52 0009 Execution finished."
        );
        assert_eq!(d["scriptLogTailCount"], 3);
        assert_eq!(d["scriptLogLineCount"], 8);
        assert!(!d["scriptLogHead"].as_str().unwrap().contains('\r'));
        assert_eq!(d["enrichmentErrors"], json!([]));
    }

    #[test]
    fn without_enrichment_the_event_still_fills_the_alert() {
        let body = fixture("app-reload-failed.legacy-hybrid.json");
        let event = Event::parse(&body).unwrap();
        let reload = event.reload().unwrap().unwrap();
        let enrichment = Enrichment {
            errors: vec!["GET /api/v1/apps/x: HTTP 500".into()],
            ..Default::default()
        };
        let tenant = tenant();
        let inputs = Inputs {
            event: &event,
            reload: &reload,
            tenant: &tenant,
            enrichment: &enrichment,
            generic_urls: &[],
        };
        let d = build(&inputs, 10, 10);
        assert_eq!(d["appName"], "Inventory snapshot", "from data.name");
        assert_eq!(
            d["errorMessage"], "Connection to data source 'ERP' failed",
            "from data.errors"
        );
        assert_eq!(d["executionDuration"]["seconds"], 3);
        assert_eq!(
            d["executionStopTime"]["stopTimeUTC"],
            "2026-09-02T21:03:11.3Z"
        );
        assert_eq!(
            d["executionStartTime"]["startTimeLocal1"],
            "2026-09-02 21:03:08"
        );
        assert_eq!(d["appOwnerName"], "");
        assert_eq!(d["scriptLogAvailable"], false);
        assert_eq!(d["scriptLogHead"], "");
        assert_eq!(
            d["enrichmentErrors"],
            json!(["GET /api/v1/apps/x: HTTP 500"])
        );
    }

    #[test]
    fn reloads_service_failure() {
        let body = fixture("reload-failed.cloudevents.json");
        let event = Event::parse(&body).unwrap();
        let reload = event.reload().unwrap().unwrap();
        let tenant = tenant();
        let enrichment = Enrichment::default();
        let inputs = Inputs {
            event: &event,
            reload: &reload,
            tenant: &tenant,
            enrichment: &enrichment,
            generic_urls: &[],
        };
        let d = build(&inputs, 5, 5);
        assert_eq!(d["reloadId"], "673e95b1f0e1d2c3b4a59687");
        assert_eq!(d["appId"], "8d7c6b5a-4e3f-4a1b-9c0d-aabbccddeeff");
        assert_eq!(d["errorCode"], "EngineReloadFailed");
        assert_eq!(
            d["errorMessage"],
            "The reload script failed: Field 'Region' not found"
        );
        assert_eq!(d["reloadTrigger"], "chronos");
        assert_eq!(d["executionStatusText"], "FAILED");
        assert_eq!(d["executionDuration"]["seconds"], 38);
        assert_eq!(
            d["executionStartTime"]["startTimeLocal1"],
            "2026-11-21 02:00:03"
        );
    }

    #[test]
    fn script_log_head_and_tail() {
        let log = ScriptLog::new("a\r\nb\r\nc\nd");
        assert_eq!(log.head(2), "a\nb");
        assert_eq!(log.tail(2), "c\nd");
        assert_eq!(log.tail(10), "a\nb\nc\nd");
        assert_eq!(log.head(0), "");
        assert_eq!(ScriptLog::new("").tail(3), "");
    }
}
