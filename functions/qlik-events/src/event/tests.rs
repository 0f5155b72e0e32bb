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
        let body =
            format!(r#"{{"id":"e","type":"{RELOAD_FINISHED}","tenantid":"t","data":{{{data}}}}}"#);
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
