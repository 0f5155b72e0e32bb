use super::*;
use crate::config::TenantRef;
use crate::qlik_api::{AppInfo, AppItem, ReloadInfo, UserInfo};
use qlik_events::Secret;
use serde_json::json;

static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;

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

fn full_enrichment() -> Enrichment {
    Enrichment {
        reload: Some(ReloadInfo {
            trigger: Some("chronos".into()),
            status: Some("FAILED".into()),
            creation_time: Some("2026-11-20T06:14:01.000Z".into()),
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
            has_section_access: Some(true),
            published: Some(true),
            publish_time: Some("2026-10-01T09:00:00.000Z".into()),
            thumbnail: Some("/api/v1/apps/x/media/thumb.png".into()),
        }),
        owner: Some(UserInfo {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.com".into()),
            tenant_id: None,
            picture: Some("https://example.com/ada.png".into()),
        }),
        item: Some(AppItem {
            tags: vec!["alert".into()],
            app_file_size: Some(52_428_800),
        }),
        script_log: Some(script_log()),
        errors: vec![],
    }
}

/// A reload `log` of several MB from the Qlik API reaches the alert data (and so webhook and
/// MQTT bodies and the journal) as its last 64,000 characters (before: whole, 5 MB seen).
#[test]
fn a_huge_reload_log_is_bounded_to_its_end() {
    let body = fixture("app-reload-failed.cloudevents.json");
    let event = Event::parse(&body).unwrap();
    let reload = event.reload().unwrap().unwrap();
    let mut enrichment = full_enrichment();
    let huge = "0123456789\n".repeat(500_000) + "Error: Field \"Amount\" not found";
    enrichment.reload.as_mut().unwrap().log = Some(huge);
    let tenant = tenant();
    let inputs = Inputs {
        event: &event,
        attempt: None,
        reload: &reload,
        tenant: &tenant,
        enrichment: &enrichment,
        generic_urls: &[],
        time_zone: &jiff::tz::TimeZone::UTC,
    };
    let d = build(&inputs, 2, 3);
    assert!(
        d.log_message.chars().count() <= SCRIPT_LOG_FIELD_MAX,
        "{}",
        d.log_message.len()
    );
    assert!(d.log_message.ends_with("Error: Field \"Amount\" not found"));
    assert!(d.log_message.contains(crate::script_log::TRUNCATED));
}

#[test]
fn app_reload_failure_with_full_enrichment() {
    let body = fixture("app-reload-failed.cloudevents.json");
    let event = Event::parse(&body).unwrap();
    let reload = event.reload().unwrap().unwrap();
    let enrichment = full_enrichment();
    let urls = [GenericUrl {
        id: "ops".into(),
        link_text: "Runbook".into(),
        url: "https://wiki/x".into(),
        comment: None,
    }];
    let tenant = tenant();
    let stockholm = jiff::tz::TimeZone::get("Europe/Stockholm").unwrap();
    let inputs = Inputs {
        event: &event,
        attempt: None,
        reload: &reload,
        tenant: &tenant,
        enrichment: &enrichment,
        generic_urls: &urls,
        time_zone: &stockholm,
    };
    let d = serde_json::to_value(build(&inputs, 2, 3)).unwrap();
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
    // Butler's meaning: the reloads API's status; the event's own is `status`.
    assert_eq!(d["executionStatusText"], "FAILED");
    assert_eq!(d["status"], "error");
    // The rest of Butler's context, from the event and the lookups.
    assert_eq!(d["userId"], "65a1f0c2e4b0d1a2b3c4d5e6");
    assert_eq!(d["userName"], "Ada Lovelace");
    assert_eq!(d["appOwnerUserId"], "65a1f0c2e4b0d1a2b3c4d5e6");
    assert_eq!(d["source"], "com.qlik/engine");
    assert_eq!(d["sizeMemoryBytes"], 52428800);
    assert_eq!(d["rowLimit"], 0);
    assert_eq!(d["appFileSize"], 52428800);
    assert_eq!(d["usageDuration"], 48211);
    assert_eq!(d["appOwnerPicture"], "https://example.com/ada.png");
    assert_eq!(d["appHasSectionAccess"], true);
    assert_eq!(d["appIsPublished"], true);
    assert_eq!(d["appPublishTime"], "2026-10-01T09:00:00.000Z");
    assert_eq!(d["appThumbnail"], "/api/v1/apps/x/media/thumb.png");
    assert_eq!(
        (
            d["isDirectQueryMode"].clone(),
            d["isSessionApp"].clone(),
            d["isSkipStore"].clone()
        ),
        (json!(false), json!(false), json!(false))
    );
    assert_eq!(d["statements"], json!([]));
    // The script log: lines (Butler's scriptLogSize), characters, and our bytes.
    let log = script_log();
    assert_eq!(d["scriptLogSize"], 8);
    assert_eq!(d["scriptLogSizeRows"], 8);
    assert_eq!(
        d["scriptLogSizeCharacters"],
        log.chars().count() - log.matches("\r\n").count() * 2
    );
    assert_eq!(d["scriptLogSizeBytes"], log.len());
    // Local times in the listener's time zone (Stockholm: UTC+1 in November).
    assert_eq!(
        d["executionStartTime"],
        json!({
            "startTimeUTC": "2026-11-20T06:14:04.090Z",
            "startTimeLocal1": "2026-11-20 07:14:04",
            "startTimeLocal2": "11/20/2026, 7:14:04 AM",
            "startTimeLocal3": "Nov 20, 2026, 7:14:04 AM",
            "startTimeLocal4": "November 20, 2026 at 7:14:04 AM CET",
            "startTimeLocal5": "November 20, 2026 at 7:14:04 AM CET",
        })
    );
    assert_eq!(
        d["executionStopTime"]["stopTimeLocal1"],
        "2026-11-20 07:14:52"
    );
    assert_eq!(
        d["executionCreationTime"]["creationTimeLocal1"],
        "2026-11-20 07:14:01"
    );
    // Butler's meaning: the reloads API's endTime − startTime (48.03 s).
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

/// Every variable of Butler's Qlik Cloud template context (design.md §4).
pub(crate) const BUTLER_CONTEXT: &[&str] = &[
    "tenantId",
    "tenantComment",
    "tenantUrl",
    "userId",
    "userName",
    "appId",
    "appName",
    "appDescription",
    "appUrl",
    "appHasSectionAccess",
    "appIsPublished",
    "appPublishTime",
    "appThumbnail",
    "reloadTrigger",
    "source",
    "eventType",
    "eventTypeVersion",
    "endedWithMemoryConstraint",
    "isDirectQueryMode",
    "isPartialReload",
    "isSessionApp",
    "isSkipStore",
    "peakMemoryBytes",
    "reloadId",
    "rowLimit",
    "statements",
    "status",
    "usageDuration",
    "sizeMemoryBytes",
    "appFileSize",
    "errorCode",
    "errorMessage",
    "logMessage",
    "executionDuration",
    "executionStartTime",
    "executionStopTime",
    "executionStatusText",
    "scriptLogSize",
    "scriptLogSizeRows",
    "scriptLogSizeCharacters",
    "scriptLogHead",
    "scriptLogTail",
    "scriptLogHeadCount",
    "scriptLogTailCount",
    "qlikSenseQMC",
    "qlikSenseHub",
    "genericUrls",
    "appOwnerName",
    "appOwnerUserId",
    "appOwnerPicture",
    "appOwnerEmail",
];

#[test]
fn a_legacy_event_fully_enriched_fills_every_butler_variable() {
    let body = fixture("app-reload-failed.legacy.json");
    let event = Event::parse(&body).unwrap();
    let reload = event.reload().unwrap().unwrap();
    let enrichment = full_enrichment();
    let tenant = tenant();
    let urls = [GenericUrl {
        id: "ops".into(),
        link_text: "Runbook".into(),
        url: "https://wiki/x".into(),
        comment: Some("Operations".into()),
    }];
    let inputs = Inputs {
        event: &event,
        attempt: None,
        reload: &reload,
        tenant: &tenant,
        enrichment: &enrichment,
        generic_urls: &urls,
        time_zone: &UTC,
    };
    let d = serde_json::to_value(build(&inputs, 10, 10)).unwrap();
    for name in BUTLER_CONTEXT {
        let v = &d[*name];
        // Flags and `statements` (always empty in Qlik's events) are present; the rest has
        // a value.
        let filled = match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
            Value::Array(a) => !a.is_empty() || *name == "statements",
            Value::Object(o) => o.values().all(|v| v != "" && !v.is_null()),
        };
        assert!(filled, "{name} is {v}");
    }
    assert_eq!(d["eventTypeVersion"], "1.0.0");
    assert_eq!(d["genericUrls"][0]["comment"], "Operations");
    for (form, time) in [
        ("executionStartTime", "startTime"),
        ("executionStopTime", "stopTime"),
        ("executionCreationTime", "creationTime"),
    ] {
        for suffix in ["UTC", "Local1", "Local2", "Local3", "Local4", "Local5"] {
            let v = &d[form][format!("{time}{suffix}")];
            assert!(
                v.as_str().is_some_and(|s| !s.is_empty()),
                "{form}.{time}{suffix}: {v}"
            );
        }
    }
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
        attempt: None,
        reload: &reload,
        tenant: &tenant,
        enrichment: &enrichment,
        generic_urls: &[],
        time_zone: &UTC,
    };
    let d = serde_json::to_value(build(&inputs, 10, 10)).unwrap();
    assert_eq!(d["appName"], "Inventory snapshot", "from data.name");
    assert_eq!(
        d["errorMessage"], "Connection to data source 'ERP' failed",
        "from data.errors"
    );
    assert_eq!(d["executionDuration"]["seconds"], 3);
    assert_eq!(
        d["executionStopTime"]["stopTimeUTC"], "2026-09-02T21:03:11.300Z",
        "as Qlik sent it"
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
        attempt: None,
        reload: &reload,
        tenant: &tenant,
        enrichment: &enrichment,
        generic_urls: &[],
        time_zone: &UTC,
    };
    let d = serde_json::to_value(build(&inputs, 5, 5)).unwrap();
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

/// Qlik documents `data` loosely: each odd shape costs at most its own field.
#[test]
fn odd_field_shapes_cost_only_themselves() {
    let body = |data: Value| {
        serde_json::to_vec(&json!({
            "specversion": "1.0", "id": "e-odd", "type": "com.qlik.v1.reload.finished",
            "source": "com.qlik/reloads", "time": "2026-11-21T02:00:41Z",
            "tenantid": "T", "data": data,
        }))
        .unwrap()
    };
    let tenant = tenant();
    let build_for = |data: Value| {
        let bytes = body(data);
        let event = Event::parse(&bytes).unwrap();
        // Without data the reload cannot be read: the pipeline warns, and alerts with what
        // the event itself says.
        let reload = event.reload().and_then(Result::ok).unwrap_or(Reload {
            reload_id: None,
            app_id: None,
            status: None,
            outcome: qlik_events::ReloadOutcome::Unknown,
            is_final: true,
        });
        let enrichment = Enrichment::default();
        let inputs = Inputs {
            event: &event,
            attempt: None,
            reload: &reload,
            tenant: &tenant,
            enrichment: &enrichment,
            generic_urls: &[],
            time_zone: &UTC,
        };
        build(&inputs, 5, 5)
    };
    let full = json!({
        "id": "r1", "appId": "a1", "succeeded": false, "status": "FAILED",
        "errorCode": "EngineReloadFailed", "durationSeconds": 38, "peakMemoryBytes": 1024,
        "startTime": "2026-11-21T02:00:03Z", "type": "chronos", "taskId": "task-9",
        "partial": true, "creationTime": "2026-11-21T02:00:01Z",
    });
    // (what changes, the data, what must still be read)
    type Check = fn(&AlertData) -> bool;
    let cases: Vec<(&str, Value, Check)> = vec![
        (
            "errors as objects",
            json!({"errors": [{"code": 7, "message": "Field X not found"}, "plain"]}),
            |d| d.error_message == "Field X not found\nplain",
        ),
        (
            "fractional durationSeconds",
            json!({"durationSeconds": 38.6}),
            |d| d.execution_duration.total_seconds == Some(39),
        ),
        (
            "numbers as strings",
            json!({"durationSeconds": "38", "peakMemoryBytes": "2048"}),
            |d| d.execution_duration.seconds == 38 && d.peak_memory_bytes == 2048,
        ),
        ("a negative number", json!({"peakMemoryBytes": -5}), |d| {
            d.peak_memory_bytes == 0
        }),
        ("partial as a string", json!({"partial": "true"}), |d| {
            d.is_partial_reload
        }),
        ("errorCode as a number", json!({"errorCode": 42}), |d| {
            d.error_code == "42"
        }),
        (
            "an object where text goes",
            json!({"type": {"x": 1}}),
            |d| d.reload_trigger.is_empty(),
        ),
    ];
    for (what, change, check) in cases {
        let mut data = full.clone();
        for (k, v) in change.as_object().unwrap() {
            data[k] = v.clone();
        }
        let d = build_for(data);
        assert!(check(&d), "{what}: {d:#?}");
        // The other fields are still read.
        assert_eq!(d.start_time_local1(), "2026-11-21 02:00:03", "{what}");
        assert_eq!(d.reload_id, "r1", "{what}");
        assert_eq!(d.task_id, "task-9", "{what}");
        assert_eq!(d.creation_time, "2026-11-21T02:00:01Z", "{what}");
        if !what.starts_with("errorCode") {
            assert_eq!(d.error_code, "EngineReloadFailed", "{what}");
        }
    }
    // No data at all: the event's own fields still fill the alert.
    let d = build_for(Value::Null);
    assert_eq!(d.event_id, "e-odd");
    assert_eq!(d.execution_stop_time.utc, "2026-11-21T02:00:41Z");
}
