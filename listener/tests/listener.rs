//! The listener against a real Mosquitto and a stand-in for the Qlik Cloud API: what a user
//! would check in the log and in the SQLite journal.

mod common;

use common::{data, event_id, Options, Setup, BIN, LIMIT, NO_WAIT, TOKEN};
use qlik_listener::journal::State;
use relay_tests::fakes::Fault;
use relay_tests::fixtures::{self, FIXTURES, SECRET, TENANT};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt;
use relay_tests::process;
use relay_tests::wait;
use std::time::Duration;

#[tokio::test]
async fn each_fixture_is_recorded_and_failures_are_enriched() {
    // The fixtures' failed attempts have no final outcome: alert them at once (the waiting
    // itself is tested in one_alert.rs).
    let s = Setup::with(Options {
        listener: NO_WAIT,
        ..Options::default()
    })
    .await;
    let _listener = s.start(true).await;
    for (name, topic) in FIXTURES {
        s.publish(topic, &fixtures::event(name)).await;
    }
    let expect = [
        (
            "app-reload-failed.cloudevents.json",
            State::Done,
            Some((
                "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f",
                "673d9f1c2a4b5c6d7e8f9012",
            )),
        ),
        (
            "app-reload-failed.legacy-hybrid.json",
            State::Done,
            Some((
                "c2d3e4f5-a6b7-4c8d-9e0f-112233445566",
                "66d63a0f9b8c7d6e5f4a3b2c",
            )),
        ),
        (
            "app-reload-failed.legacy.json",
            State::Done,
            Some((
                "c2d3e4f5-a6b7-4c8d-9e0f-112233445566",
                "66d63a0f9b8c7d6e5f4a3b2d",
            )),
        ),
        (
            "reload-failed.cloudevents.json",
            State::Done,
            Some((
                "8d7c6b5a-4e3f-4a1b-9c0d-aabbccddeeff",
                "673e95b1f0e1d2c3b4a59687",
            )),
        ),
        ("app-reload-ok.cloudevents.json", State::Recorded, None),
        ("app-created.cloudevents.json", State::Recorded, None),
    ];
    for (name, state, failure) in expect {
        let body = fixtures::event(name);
        let entry = s.wait_state(&event_id(&body), state).await;
        assert_eq!(entry.body, body, "{name}: the raw body is kept");
        assert_eq!(entry.tenant_id, TENANT);
        let Some((app, reload)) = failure else {
            assert!(
                entry.enrichment.is_none(),
                "{name}: no alert data for a non-failure"
            );
            continue;
        };
        assert_eq!(entry.app_id.as_deref(), Some(app), "{name}");
        assert_eq!(entry.reload_id.as_deref(), Some(reload), "{name}");
        let d = data(&entry);
        assert_eq!(d["appName"], format!("App {app}"), "{name}");
        assert_eq!(d["appOwnerName"], "Ada Lovelace");
        assert_eq!(d["appOwnerEmail"], "ada@example.com");
        assert_eq!(d["appTags"], serde_json::json!(["alert"]));
        assert_eq!(d["reloadTrigger"], "chronos");
        assert_eq!(d["errorMessage"], "Field \"Amount\" not found");
        assert_eq!(d["tenantComment"], "Test tenant");
        assert_eq!(d["qlikSenseHub"], format!("{}/hub", s.api.url()));
        assert!(d["scriptLogHead"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-20 06:14:04 0002 Execution started."));
        assert!(d["scriptLogTail"]
            .as_str()
            .unwrap()
            .ends_with("0009 Execution finished."));
        assert_eq!(d["enrichmentErrors"], serde_json::json!([]));
        let log = std::fs::read_to_string(s.script_log(app, reload)).expect("script log on disk");
        assert!(
            log.contains("Field \"Amount\" not found \\ (see `Orders`)\r\n"),
            "stored as received, CRLF"
        );
    }
    for call in s.api.calls() {
        assert_eq!(
            call.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    // What an operator sees with `history`, while the listener runs.
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = process::run(BIN, &["history", "--config", &config], &s.env()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("received (UTC)"), "{out}");
    assert!(out.contains("6 event(s)"), "{out}");
    let (code, out) = process::run(
        BIN,
        &[
            "history",
            "--config",
            &config,
            "--event-state",
            "reload-failed",
            "--json",
            "--since",
            "1h",
        ],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "the four reload failures: {out}");
    assert!(rows.iter().all(|r| r["state"] == "done"), "{out}");
}

#[tokio::test]
async fn duplicates_are_processed_once_and_garbage_never_stops_the_loop() {
    let s = Setup::new("").await;
    let mut listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let topic = FIXTURES[0].1;
    s.publish(topic, &body).await;
    s.wait_state(&event_id(&body), State::Done).await;

    // Garbage of every kind, and the same event again.
    s.publish(topic, b"not json at all").await;
    s.publish(topic, b"").await;
    s.publish(topic, br#"{"id":"x","type":"t"}"#).await;
    s.publish(topic, &[0xff, 0xfe, 0x00]).await;
    s.publish(topic, &vec![b'{'; 900_000]).await;
    s.publish(topic, &body).await;
    // A later good event proves the loop is alive and everything before it was handled.
    let next = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &next).await;
    s.wait_state(&event_id(&next), State::Done).await;

    listener
        .wait_for_output("duplicate event; already recorded", 1, LIMIT)
        .await;
    listener
        .wait_for_output("not a Qlik Cloud event; dropped", 5, LIMIT)
        .await;
    assert_eq!(
        s.api.calls_to("/api/v1/reloads/673d9f1c2a4b5c6d7e8f9012"),
        1,
        "enriched once"
    );
    let all = s.journal().await.recent(0, 100).await.unwrap();
    assert_eq!(all.len(), 2, "only the two real events are recorded");
    let logs = listener.output().join("\n");
    assert!(
        !logs.contains(TOKEN) && !logs.contains(SECRET),
        "secrets in logs"
    );
    listener.kill().await;
}

/// Issue #33 item 4: with the wrong secret, rejections were only a warning per event; now
/// `/readyz` says events are being rejected and hints at the secret, until one verifies.
#[tokio::test]
async fn unknown_tenants_are_skipped_and_forged_signatures_rejected() {
    let s = Setup::with(Options {
        forward: "          requireSignature: true\n",
        listener: "    metricsListen: 127.0.0.1:0\n",
        ..Options::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut listener = process::Running::spawn(BIN, &["--config", &config], &s.env());
    let line = listener
        .wait_for_line("qlik-listener metrics on ", LIMIT)
        .await;
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    let metrics_url = line
        .trim_start_matches("qlik-listener metrics on ")
        .to_owned();
    let readyz_url = metrics_url.replace("/metrics", "/readyz");
    let readyz = || async {
        let r = reqwest::get(&readyz_url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(readyz().await.0, 200);
    let stranger = fixtures::minimal_event(
        "from-elsewhere",
        "com.qlik.v1.app.reload.finished",
        "another-tenant",
    );
    s.publish("qscloud/app/reload/another-tenant", &stranger)
        .await;
    let entry = s.wait_state("from-elsewhere", State::Skipped).await;
    assert_eq!(entry.note.as_deref(), Some("tenant not configured"));

    let body = fixtures::event("app-reload-failed.cloudevents.json");
    mqtt::publish(s.broker.port, FIXTURES[0].1, &body, Some(&"0".repeat(64))).await;
    let entry = s.wait_state(&event_id(&body), State::Rejected).await;
    assert!(entry.note.unwrap().contains("does not match"));
    mqtt::publish(
        s.broker.port,
        FIXTURES[1].1,
        &fixtures::event(FIXTURES[1].0),
        None,
    )
    .await;
    s.wait_state(&event_id(&fixtures::event(FIXTURES[1].0)), State::Rejected)
        .await;
    let (status, why) = readyz().await;
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("events are being rejected because their qlik-signature does not verify")
            && why.contains(
                "is the tenant's webhookSecret the same secret as the webhook's in Qlik Cloud"
            ),
        "{why}"
    );
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qlik_listener_events_rejected_total 2"),
        "{metrics}"
    );

    // A properly signed one is handled (the API asked about it); the API was never asked about
    // the others: neither rejected reload, nor their apps.
    let good = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &good).await;
    s.wait_state(&event_id(&good), State::Done).await;
    // It verified: the secret is right (again), and the listener is ready.
    assert_eq!(readyz().await, (200, r#"{"ready":true}"#.to_owned()));
    assert!(s.api.calls_to("/api/v1/reloads/673e95b1f0e1d2c3b4a59687") >= 1);
    for never in [
        "/api/v1/reloads/673d9f1c2a4b5c6d7e8f9012",
        "/api/v1/reloads/66d63a0f9b8c7d6e5f4a3b2c",
        "/api/v1/apps/4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f",
        "/api/v1/apps/c2d3e4f5-a6b7-4c8d-9e0f-112233445566",
    ] {
        assert_eq!(s.api.calls_to(never), 0, "{never}");
    }
    listener
        .wait_for_output("event from a tenant that is not configured", 1, LIMIT)
        .await;
}

#[tokio::test]
async fn events_published_while_stopped_are_processed_after_restart() {
    // The fixtures' failed attempts have no final outcome: alert them at once (the waiting
    // itself has tests of its own in one_alert.rs).
    let s = Setup::with(Options {
        listener: NO_WAIT,
        ..Options::default()
    })
    .await;
    let mut listener = s.start(true).await;
    listener.kill().await;
    // The broker keeps the persistent session and queues these for the listener.
    // The four reload failures among the fixtures.
    let failures: Vec<_> = [0, 1, 2, 4].iter().map(|&i| FIXTURES[i]).collect();
    let bodies: Vec<Vec<u8>> = failures
        .iter()
        .map(|(name, _)| fixtures::event(name))
        .collect();
    for ((_, topic), body) in failures.iter().zip(&bodies) {
        s.publish(topic, body).await;
    }
    let _listener = s.start(false).await;
    for body in &bodies {
        s.wait_state(&event_id(body), State::Done).await;
    }
}

#[tokio::test]
async fn a_listener_killed_after_receipt_finishes_the_event_after_restart() {
    let s = Setup::new("").await;
    let mut listener = s.start(true).await;
    // The API hangs, so the event is recorded (and acknowledged) but not yet enriched.
    s.api.inject(&[Fault::Delay(Duration::from_secs(60)); 8]);
    let body = fixtures::event("app-reload-failed.legacy-hybrid.json");
    s.publish(FIXTURES[1].1, &body).await;
    s.wait_state(&event_id(&body), State::Pending).await;
    listener.kill().await;

    s.api.clear_faults();
    let _listener = s.start(false).await;
    let entry = s.wait_state(&event_id(&body), State::Done).await;
    assert_eq!(
        data(&entry)["appName"],
        "App c2d3e4f5-a6b7-4c8d-9e0f-112233445566"
    );
}

#[tokio::test]
async fn a_broker_restart_is_survived() {
    let mut s = Setup::new("").await;
    let mut listener = s.start(true).await;
    s.broker.restart().await;
    // Mosquitto here keeps no state across restarts, so the listener must subscribe again.
    listener.wait_for_output("subscribed", 2, LIMIT).await;
    let body = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &body).await;
    s.wait_state(&event_id(&body), State::Done).await;
    let lost = listener
        .output()
        .iter()
        .filter(|l| l.contains("broker connection lost"))
        .count();
    assert_eq!(lost, 1, "one log line for the outage, not a flood");
}

#[tokio::test]
async fn qlik_api_errors_are_retried_and_a_dead_api_degrades_the_alert() {
    let s = Setup::new("").await;
    let _listener = s.start(true).await;
    // 500 then 429 (Retry-After: 1) on the first calls: retried, then fine.
    s.api
        .inject(&[Fault::Status(500), Fault::TooMany(1), Fault::Status(503)]);
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    let entry = s.wait_state(&event_id(&body), State::Done).await;
    assert_eq!(data(&entry)["enrichmentErrors"], serde_json::json!([]));
    assert_eq!(data(&entry)["appOwnerName"], "Ada Lovelace");

    // Every call fails (4 attempts each): the alert data is still made, marked degraded.
    s.api.inject(&[Fault::Status(500); 40]);
    let body = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &body).await;
    let entry = s.wait_state(&event_id(&body), State::Done).await;
    let d = data(&entry);
    assert_eq!(
        d["errorMessage"], "The reload script failed: Field 'Region' not found",
        "from the event itself"
    );
    assert_eq!(d["appId"], "8d7c6b5a-4e3f-4a1b-9c0d-aabbccddeeff");
    assert!(!d["enrichmentErrors"].as_array().unwrap().is_empty(), "{d}");
}

#[tokio::test]
async fn mqtt_3_1_1_and_a_tenant_named_by_host() {
    // Butler's template names the tenant by host; the id is asked of /api/v1/users/me.
    let s = Setup::with(Options {
        broker: "            protocolVersion: \"3.1.1\"\n",
        tenant_ref: Some("acme.eu.qlikcloud.com"),
        logged_broker: true,
        ..Options::default()
    })
    .await;
    let mut listener = s.start(true).await;
    listener
        .wait_for_output("tenant host name resolved", 1, LIMIT)
        .await;
    assert_eq!(s.api.calls_to("/api/v1/users/me"), 1);
    let body = fixtures::event("app-reload-failed.legacy.json");
    s.publish(FIXTURES[2].1, &body).await;
    let entry = s.wait_state(&event_id(&body), State::Done).await;
    assert_eq!(data(&entry)["appOwnerName"], "Ada Lovelace");
    // The broker saw the listener connect with MQTT 3.1.1 (`p2`; MQTT 5 is `p5`).
    let log = s.broker.log();
    let connects: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as listener-"))
        .collect();
    assert!(!connects.is_empty(), "{log}");
    assert!(connects.iter().all(|l| l.contains("(p2,")), "{connects:?}");
}

#[tokio::test]
async fn check_config_explains_every_mistake() {
    let s = Setup::new("").await;
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = process::run(BIN, &["check-config", "--config", &config], &s.env()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains(&format!("tenant:        {TENANT}")), "{out}");
    assert!(
        !out.contains(TOKEN) && !out.contains(SECRET),
        "secrets in summary:\n{out}"
    );

    let broken = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(
            &format!("tenantUrl: {}", s.api.url()),
            "tenantUrl: qlikcloud",
        )
        .replace(&format!("port: {}", s.broker.port), "port: 70000");
    std::fs::write(&s.config, broken).unwrap();
    let (code, out) = process::run(
        BIN,
        &["check-config", "--config", &config],
        &[("QLIK_TOKEN", TOKEN.into())],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        "Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl: not a URL",
        "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.port: expected a whole number from 1 to 65535",
        "Butler.qlikSenseCloud.event.mqtt.tenant.webhookSecret: environment variable WEBHOOK_SECRET is not set",
        "the configuration has 3 problem(s)",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
    assert!(out.contains(&config), "errors name the file:\n{out}");
}

#[tokio::test]
async fn mutual_tls_to_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let ca = relay_tests::tls::TestCa::new(dir.path(), "broker");
    let server = ca.issue("server", &["localhost", "127.0.0.1"]);
    let client = ca.issue("listener", &["listener"]);
    let (broker, tls_port) = Mosquitto::start_with_mutual_tls(&ca, &server).await;
    let s = Setup::new("").await;
    // Point the listener at the TLS port of this broker, with its CA and a client certificate.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("            port: {}\n", s.broker.port),
        &format!("            port: {tls_port}\n            host: localhost\n"),
    );
    let text = text.replacen("            host: 127.0.0.1\n", "", 1).replace(
        "            tls:\n              enable: false\n",
        &format!(
            "            tls:\n              enable: true\n              caFile: {}\n              certFile: {}\n              keyFile: {}\n",
            ca.ca_file.display(),
            client.cert.display(),
            client.key.display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    let _listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    mqtt::publish(
        broker.port,
        FIXTURES[0].1,
        &body,
        Some(&fixtures::sign(&body)),
    )
    .await;
    s.wait_state(&event_id(&body), State::Done).await;
}

#[tokio::test]
async fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/butler.example.yaml");
    let env = [
        ("MQTT_PASSWORD", "example-password".to_owned()),
        ("QLIK_API_KEY", "example-key".to_owned()),
        ("QLIK_WEBHOOK_SECRET", "example-secret".to_owned()),
        (
            "TEAMS_WORKFLOW_URL",
            "https://prod.westeurope.logic.azure.com/workflows/x".to_owned(),
        ),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X".to_owned(),
        ),
        ("SMTP_PASSWORD", "example-smtp-password".to_owned()),
    ];
    let (code, out) = process::run(BIN, &["check-config", "--config", example], &env).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("mqtts://qlik-listener:***@broker.example.com:8883"),
        "{out}"
    );
    assert!(
        !out.contains("example-password") && !out.contains("example-key"),
        "{out}"
    );
    let (code, out) = process::run(BIN, &["--help"], &[]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("check-config") && out.contains("Butler"),
        "{out}"
    );
}

#[tokio::test]
async fn register_webhook_creates_updates_lists_and_resends() {
    let s = Setup::new("").await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut env = s.env();
    env.push(("QLIK_WEBHOOK_SECRET", SECRET.to_owned()));
    let url = "https://abc.lambda-url.eu-west-1.on.aws/";
    let run = |args: Vec<String>| {
        let env = env.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            process::run(BIN, &args, &env).await
        }
    };
    let with = |command: &[&str], extra: &[&str]| {
        command
            .iter()
            .chain(["--config", config.as_str()].iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let register = ["webhook", "register"];

    // The name scripts used before `webhook register`.
    let (code, out) = run(with(
        &["register-webhook"],
        &["--url", url, "--failures-only"],
    ))
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created webhook wh-1"), "{out}");
    let hooks = s.api.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], url);
    assert_eq!(hooks[0]["secret"], SECRET);
    assert_eq!(hooks[0]["filter"], "data.status eq \"error\"");
    assert_eq!(
        hooks[0]["eventTypes"],
        serde_json::json!(["com.qlik.v1.app.reload.finished"])
    );

    // Again, without the filter: the same webhook is replaced, not duplicated.
    let (code, out) = run(with(&register, &["--url", url])).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("updated webhook wh-1"), "{out}");
    let hooks = s.api.webhooks();
    assert_eq!(hooks.len(), 1);
    assert!(hooks[0].get("filter").is_none());
    assert_eq!(hooks[0]["secret"], SECRET, "a PUT re-sends the secret");

    let (code, out) = run(with(&["webhook", "list"], &[])).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(url) && out.contains("1 webhook(s)"), "{out}");
    assert!(!out.contains(SECRET));
    // Issue #33 item 14: why Qlik disabled it, and columns that line up.
    s.api.update_webhook(
        "qlik-cloud-mqtt-relay",
        serde_json::json!({"enabled": false, "disabledReason": "Too many failed deliveries"}),
    );
    let (code, out) = run(with(&["webhook", "list"], &[])).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("disabled: Too many failed deliveries"),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].find("url"),
        lines[1].find(url),
        "the url column lines up: {out}"
    );

    let (code, out) = run(with(&["webhook", "failed-deliveries"], &[])).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2 failed deliveries") && out.contains("d-1") && out.contains("d-3"),
        "{out}"
    );
    // Qlik sends them to the webhook's URL again; this one does not answer, so each failed
    // again (Qlik still answers 201), and the command says so.
    let (code, out) = run(with(&["webhook", "resend"], &[])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("[2/2] resent d-3") && out.contains("failed again: could not deliver"),
        "{out}"
    );
    assert!(
        out.contains("2 of 2 resent deliveries failed again"),
        "{out}"
    );
    assert_eq!(s.api.resent(), ["d-1", "d-3"]);

    let (code, out) = run(with(&["webhook", "resend"], &["--name", "other"])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no webhook named \"other\""), "{out}");

    let (code, out) = run(with(&register, &["--url", url, "--secret-env", "NOT_SET"])).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("NOT_SET is not set"), "{out}");
}

/// Scenario 6 (issue #6) for the listener: Mosquitto with TLS (a CA made here), passwords and
/// the repository's ACL. The right CA and password work; a wrong password or a CA that did not
/// sign the broker's certificate give an error that says so, and the password is never logged.
#[tokio::test]
async fn tls_and_passwords_to_the_broker_with_the_repo_acl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = relay_tests::tls::TestCa::new(dir.path(), "broker");
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = relay_tests::tls::TestCa::new(stranger_dir.path(), "stranger");
    let server = ca.issue("server", &["localhost"]);
    let (broker, tls_port) =
        Mosquitto::start_like_infra(&server, &[("qlik-listener", "listener-pa55word")]).await;
    let s = Setup::new("").await;
    let configure = |ca_file: &std::path::Path| {
        let text = std::fs::read_to_string(&s.config).unwrap();
        let text = text
            .replace(
                &format!("            port: {}\n", s.broker.port),
                &format!(
                    "            port: {tls_port}\n            username: qlik-listener\n            password: ${{BROKER_PASSWORD}}\n"
                ),
            )
            .replacen("            host: 127.0.0.1\n", "            host: localhost\n", 1);
        let start = text.find("            tls:\n").unwrap();
        let end = start + text[start..].find("          topic:").unwrap();
        let tls = format!(
            "            tls:\n              enable: true\n              caFile: {}\n",
            ca_file.display()
        );
        std::fs::write(
            &s.config,
            format!("{}{tls}{}", &text[..start], &text[end..]),
        )
        .unwrap();
    };
    let run = |password: &str| {
        let mut env = s.env();
        env.push(("BROKER_PASSWORD", password.to_owned()));
        process::Running::spawn(BIN, &["--config", s.config.to_str().unwrap()], &env)
    };

    configure(&ca.ca_file);
    let mut listener = run("listener-pa55word");
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    mqtt::publish(
        broker.port,
        FIXTURES[0].1,
        &body,
        Some(&fixtures::sign(&body)),
    )
    .await;
    s.wait_state(&event_id(&body), State::Done).await;
    listener.kill().await;

    let mut wrong_password = run("not-the-password");
    wrong_password
        .wait_for_output("broker connection lost", 1, LIMIT)
        .await;
    let out = wrong_password.output().join("\n");
    assert!(
        out.contains("the broker refused the credentials: check the user name and password (or client certificate) in Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker"),
        "the error says the credentials were refused, and where they are set: {out}"
    );
    assert!(!out.contains("not-the-password") && !out.contains("listener-pa55word"));
    wrong_password.kill().await;

    configure(&stranger.ca_file);
    let mut wrong_ca = run("listener-pa55word");
    wrong_ca
        .wait_for_output("broker connection lost", 1, LIMIT)
        .await;
    let out = wrong_ca.output().join("\n");
    assert!(
        out.contains("TLS failed: check the broker's certificate, the CA and the host name in Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker"),
        "the error names the certificate and the setting: {out}"
    );
    assert!(!out.contains("listener-pa55word"));
    wrong_ca.kill().await;

    // Plain MQTT to the TLS port: the broker hangs up, and the hint says what that usually is.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(
            "              enable: true\n",
            "              enable: false\n",
        ),
    )
    .unwrap();
    let mut plain = run("listener-pa55word");
    plain
        .wait_for_output("broker connection lost", 1, LIMIT)
        .await;
    let out = plain.output().join("\n");
    assert!(
        out.contains("if this port speaks TLS (usually 8883), set tls.enable: true in Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker"),
        "the hint is in this file's terms, not the forwarder's mqtts://: {out}"
    );
    assert!(!out.contains("mqtts://"), "{out}");
    plain.kill().await;

    // Issue #33 item 6: TLS to a plain MQTT port got "check the certificate"; the hint now says
    // the port does not speak TLS.
    configure(&ca.ca_file);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(
            &format!("            port: {tls_port}\n"),
            &format!("            port: {}\n", s.broker.port),
        ),
    )
    .unwrap();
    let mut tls_to_plain = run("listener-pa55word");
    tls_to_plain
        .wait_for_output("broker connection lost", 1, LIMIT)
        .await;
    let out = tls_to_plain.output().join("\n");
    assert!(
        out.contains(&format!("port {} does not answer in TLS: is it the broker's plain MQTT port (usually 1883)? Use its TLS port (usually 8883), or set tls.enable: false in Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker", s.broker.port)),
        "{out}"
    );
    assert!(!out.contains("check the broker's certificate"), "{out}");
}

/// A burst far larger than the listener's queues (found by the pipeline benchmark: the MQTT
/// event loop waited for room in the queue to the pipeline while the pipeline waited for room
/// to send its acknowledgements, and both stopped). Every event must be recorded.
#[tokio::test]
async fn a_burst_of_events_is_recorded_without_stalling() {
    use relay_mqtt::Publish as _;
    let s = Setup::with(Options {
        persistent_broker: true,
        ..Options::default()
    })
    .await;
    let _listener = s.start(true).await;
    let publisher = relay_mqtt::MqttPublisher::new(relay_mqtt::BrokerOptions {
        host: "127.0.0.1".into(),
        port: s.broker.port,
        username: None,
        password: None,
        tls: None,
        protocol: relay_mqtt::Protocol::V5,
        client_id_prefix: "burst".into(),
        max_payload: 1 << 20,
        timeout: Duration::from_secs(30),
        description: s.broker.url(),
        setting: relay_mqtt::Setting::Url("test".into()),
    });
    const N: usize = 2000;
    let topic = "qscloud/event/com.qlik.app.created/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG";
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| fixtures::minimal_event(&format!("burst-{i}"), "com.qlik.app.created", TENANT))
        .collect();
    for chunk in bodies.chunks(100) {
        let publishes = chunk
            .iter()
            .map(|body| publisher.publish(relay_mqtt::Message::new(topic, body)));
        for result in futures_util::future::join_all(publishes).await {
            result.expect("published");
        }
    }
    let journal = s.journal().await;
    wait::until(LIMIT * 3, &format!("all {N} events to be recorded"), || {
        let journal = journal.clone();
        async move {
            let rows = qlik_listener::cli::history::load(
                &journal,
                Duration::from_secs(3600),
                None,
                None,
                10_000,
            )
            .await
            .unwrap();
            (rows.len() == N).then_some(())
        }
    })
    .await;
}

/// `service` is the Windows service; elsewhere it says what to use instead, and fails.
#[cfg(not(windows))]
#[tokio::test]
async fn the_windows_service_commands_point_to_systemd_elsewhere() {
    let (code, out) = process::run(BIN, &["service", "start"], &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("is for Windows") && out.contains("infra/systemd"),
        "{out}"
    );
}

/// `metricsListen` serves `/metrics` (and health) without Butler's HTTP API: the version, the
/// time from a reload's end to its alert, the backlog and events from tenants not configured.
#[tokio::test]
async fn metrics_on_their_own_address_with_latency_backlog_and_unknown_tenants() {
    let hook = relay_tests::fakes::HttpReceiver::start().await;
    let tenant = format!(
        "          alert:\n            webhookNotification:\n              reloadAppFailure:\n                enable: true\n                urls: [\"{}\"]\n",
        hook.url("/alerts")
    );
    let s = Setup::with(Options {
        tenant: &tenant,
        listener: &format!("{NO_WAIT}    metricsListen: 127.0.0.1:0\n"),
        ..Options::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut l = process::Running::spawn(BIN, &["--config", &config], &s.env());
    let line = l.wait_for_line("qlik-listener metrics on ", LIMIT).await;
    l.wait_for_output("subscribed", 1, LIMIT).await;
    let url = line
        .trim_start_matches("qlik-listener metrics on ")
        .to_owned();
    assert!(!line.contains(":0/"), "{line}");

    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    let other = fixtures::minimal_event(
        "from-elsewhere",
        "com.qlik.v1.app.created",
        "OtherTenant0000000000000000000000",
    );
    mqtt::publish(
        s.broker.port,
        "qscloud/event/com.qlik.v1.app.created/OtherTenant0000000000000000000000",
        &other,
        None,
    )
    .await;
    s.wait_state("from-elsewhere", State::Skipped).await;
    wait::until(LIMIT, "the alert", || {
        let n = hook.delivered().len();
        async move { (n == 1).then_some(()) }
    })
    .await;

    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .to_owned()
    };
    assert_eq!(
        value(&format!(
            "qlik_listener_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        "1"
    );
    assert_eq!(value("qlik_listener_events_unknown_tenant_total"), "1");
    assert_eq!(value("qlik_listener_backlog_events"), "0");
    // The fixture's reload ended in 2026-11: the one alert is in the last bucket only.
    assert_eq!(value("qlik_listener_alert_latency_seconds_count"), "1");
    assert_eq!(
        value("qlik_listener_alert_latency_seconds_bucket{le=\"3600\"}"),
        "0"
    );
    assert_eq!(
        value("qlik_listener_alert_latency_seconds_bucket{le=\"+Inf\"}"),
        "1"
    );
    // Health too, but no publish endpoint.
    let base = url.trim_end_matches("/metrics");
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let put = reqwest::Client::new()
        .put(format!("{base}/v4/mqttpublishmessage"))
        .json(&serde_json::json!({"topic": "x", "message": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 404);
}

/// A subcommand that exists only in some builds says which build has it, rather than clap's
/// "unrecognized subcommand".
#[cfg(not(feature = "embedded-broker"))]
#[tokio::test]
async fn the_broker_subcommand_without_its_feature_says_which_build_has_it() {
    let (code, out) = process::run(BIN, &["broker", "--port", "1883"], &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not in this build: build with `cargo build --release -p qlik-listener --features embedded-broker`"),
        "{out}"
    );
}

/// `infra/mosquitto/acl` lets the documented examples through (the forwarder's events, the
/// listener's alerts, status and API example topic, a task start) and nothing more: no one but
/// the forwarder writes events, and the listener cannot start tasks through its API. MQTT 5, so
/// a denied publish is a refused PUBACK, not silence.
#[tokio::test]
async fn the_shipped_acl_lets_the_readme_examples_through_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let ca = relay_tests::tls::TestCa::new(dir.path(), "broker");
    let server = ca.issue("server", &["localhost"]);
    let users = [
        ("qlik-webhook", "webhook-pa55word"),
        ("qlik-listener", "listener-pa55word"),
        ("task-starter", "starter-pa55word"),
    ];
    let (_broker, tls_port) = Mosquitto::start_like_infra(&server, &users).await;
    let tls = qlik_events::tls::client_config(
        qlik_events::tls::TlsFiles {
            ca_file: Some(&ca.ca_file),
            client: None,
            insecure_skip_verify: false,
        },
        qlik_events::tls::SettingNames {
            ca_file: "ca",
            cert_file: "cert",
            key_file: "key",
        },
    )
    .unwrap();
    let tls = std::sync::Arc::new(tls);
    let publish = |user: &str, topic: &str| {
        let password = users.iter().find(|(u, _)| *u == user).unwrap().1;
        let publisher = relay_mqtt::MqttPublisher::new(relay_mqtt::BrokerOptions {
            host: "localhost".into(),
            port: tls_port,
            username: Some(user.to_owned()),
            password: Some(qlik_events::Secret::new(password)),
            tls: Some(tls.clone()),
            protocol: relay_mqtt::Protocol::V5,
            client_id_prefix: format!("acl-{user}"),
            max_payload: 1024,
            timeout: Duration::from_secs(10),
            description: "acl test".into(),
            setting: relay_mqtt::Setting::Url("test".into()),
        });
        let topic = topic.to_owned();
        async move {
            use relay_mqtt::Publish as _;
            publisher
                .publish(relay_mqtt::Message::new(&topic, b"x"))
                .await
        }
    };
    for (user, topic) in [
        (
            "qlik-webhook",
            "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
        ),
        ("qlik-listener", "qlikcloud/alerts/reload-failed"),
        ("qlik-listener", "qlik-listener/status"),
        ("qlik-listener", "qlik-listener/task-result"),
        ("qlik-listener", "qliksense/notice"),
        ("task-starter", "qliksense/start_task"),
    ] {
        let result = publish(user, topic).await;
        assert!(result.is_ok(), "{user} → {topic}: {result:?}");
    }
    for (user, topic) in [
        (
            "qlik-listener",
            "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
        ),
        ("qlik-listener", "qliksense/start_task"),
        (
            "task-starter",
            "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
        ),
        ("task-starter", "qliksense/notice"),
        ("qlik-webhook", "qliksense/start_task"),
        ("qlik-webhook", "qlikcloud/alerts/x"),
    ] {
        let result = publish(user, topic).await;
        assert!(
            format!("{result:?}").contains("NotAuthorized"),
            "{user} must not write {topic}: {result:?}"
        );
    }
}

/// Issue #33 item 7: `check-config --online` tries what the file alone cannot show: the broker
/// (credentials, subscription), each API key, the webhook (there, enabled, calling the
/// forwarder) and, with `--send-test`, each channel. Each line is ok or names what to change.
#[tokio::test]
async fn check_config_online_tries_the_broker_the_api_key_the_webhook_and_the_channels() {
    let hook = relay_tests::fakes::HttpReceiver::start().await;
    let placeholder = "https://abc.lambda-url.eu-west-1.on.aws/webhook";
    let tenant = common::webhook_alert(&hook.url("/alerts"));
    let mut s = Setup::with(Options {
        tenant: &tenant,
        webhook_watch: &format!("      intervalSeconds: 3600\n      expectedUrl: {placeholder}\n"),
        ..Options::default()
    })
    .await;
    // A real forwarder on the same broker, with the secret the webhook should have.
    let (_forwarder, base) = process::serve_forwarder(
        process::workspace_bin("qlik-webhook").to_str().unwrap(),
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            ("MQTT_URL", s.broker.url()),
        ],
    )
    .await;
    let forwarder = format!("{base}/webhook");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace(placeholder, &forwarder)).unwrap();
    let config = s.config.to_str().unwrap().to_owned();
    let online = |extra: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let config = config.clone();
        async move {
            let mut args = vec!["check-config", "--config", &config, "--online"];
            args.extend(extra);
            process::run(BIN, &args, &env).await
        }
    };

    // No webhook yet: the broker and the key are fine, the webhook is missing.
    let (code, out) = online(&[], s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    let broker = format!("127.0.0.1:{}", s.broker.port);
    assert!(
        out.contains(&format!(
            "ok   broker {broker}: connected, and subscribed to qscloud/#"
        )),
        "{out}"
    );
    assert!(out.contains(": the API key works"), "{out}");
    assert!(
        out.contains("FAIL tenant") && out.contains("no webhook named \"qlik-cloud-mqtt-relay\""),
        "{out}"
    );

    // The service says the same at start, summarised (and starts anyway).
    let mut listener = s.start(true).await;
    listener
        .wait_for_output(
            "1 of 3 start-up checks failed (`qlik-listener check-config --online` repeats them)",
            1,
            LIMIT,
        )
        .await;
    assert!(
        listener
            .output()
            .iter()
            .any(|l| l.contains("start-up check failed: tenant")
                && l.contains("no webhook named \"qlik-cloud-mqtt-relay\"")),
        "{:#?}",
        listener.output()
    );
    listener.kill().await;

    // Registered elsewhere, then at the forwarder.
    let register = |url: &str, secret: &str| {
        let (config, url) = (config.clone(), url.to_owned());
        let mut env = s.env();
        env.push(("QLIK_WEBHOOK_SECRET", secret.to_owned()));
        async move {
            let args = ["webhook", "register", "--config", &config, "--url", &url];
            process::run(BIN, &args, &env).await
        }
    };
    let (code, out) = register("https://elsewhere.example.com/hook", SECRET).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = online(&[], s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("calls https://elsewhere.example.com/hook, not the forwarder at {forwarder} (qlikCloudListener.webhookWatch.expectedUrl)")),
        "{out}"
    );
    let (code, out) = register(&forwarder, SECRET).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = online(&[], s.env()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("online checks OK"), "{out}");
    assert!(hook.delivered().is_empty(), "no alert without --send-test");
    let mut listener = s.start(false).await;
    listener
        .wait_for_output("start-up checks passed", 1, LIMIT)
        .await;
    assert!(
        !listener
            .output()
            .iter()
            .any(|l| l.contains("start-up check failed")),
        "{:#?}",
        listener.output()
    );
    listener.kill().await;

    // --send-test: Qlik resends the webhook's newest delivery, which the forwarder takes (the
    // same secret); a test alert on the channel, said as a test.
    let (code, out) = online(&["--send-test"], s.env()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "and {forwarder} took it: the webhook's secret is the forwarder's"
        )),
        "{out}"
    );
    assert!(out.contains("channel webhook-1: test alert sent"), "{out}");
    let alert = hook.delivered()[0].json();
    assert!(
        alert["alert"]["alertTitle"]
            .as_str()
            .unwrap()
            .starts_with("TEST: "),
        "{alert}"
    );

    // The webhook with a secret that is not the forwarder's: the resend is refused (401), and
    // the line says which secret to align.
    let other = "another-secret-that-is-32-chars-long!!";
    let (code, out) = register(&forwarder, other).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = online(&["--send-test"], s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL tenant")
            && out.contains("401")
            && out.contains(
                "the webhook's secret in Qlik Cloud is not the forwarder's QLIK_WEBHOOK_SECRET"
            ),
        "{out}"
    );
    assert!(!out.contains(other) && !out.contains(SECRET), "{out}");

    // A revoked key, and a broker that is gone: each says which key to change.
    let mut wrong = s.env();
    wrong.retain(|(k, _)| *k != "QLIK_TOKEN");
    wrong.push(("QLIK_TOKEN", "revoked-key-0123456789".to_owned()));
    let (code, out) = online(&[], wrong).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Qlik Cloud refused the API key")
            && out.contains("Butler.qlikSenseCloud.event.mqtt.tenant.auth.jwt.token"),
        "{out}"
    );
    assert!(
        !out.contains("revoked-key"),
        "the key is not printed: {out}"
    );
    s.broker.stop().await;
    let (code, out) = online(&[], s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("FAIL broker {broker}")), "{out}");
}
