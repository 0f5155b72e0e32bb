//! Reliability (issue #17): what a hostile sender, a misconfigured part or a failing disk tries
//! against the listener's promises, one test each, with the real listener and a real
//! Mosquitto. Each test names the promise it tries to break.

mod common;

use common::{event_id, Setup, LIMIT};
use qlik_listener::journal::State;
use relay_tests::fixtures::{self, FIXTURES};
use relay_tests::mqtt;
use std::time::Duration;

/// The listener's HTTP API on a free port (plus `extra` lines under `Butler:`).
const API: &str =
    "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n";

/// Starts the listener of a setup with [`API`] (and `extra`); returns it and the API's URL.
async fn with_api(extra: &str) -> (Setup, relay_tests::process::Running, String) {
    let butler = format!("{API}{extra}");
    let s = Setup::with(common::Options {
        butler: &butler,
        ..Default::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut listener =
        relay_tests::process::Running::spawn(common::BIN, &["--config", &config], &s.env());
    let api = listener.wait_for_line("qlik-listener API on ", LIMIT).await;
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    (s, listener, api)
}

/// `GET /readyz`: its status and body.
async fn readyz(api: &str) -> (u16, String) {
    let r = reqwest::get(format!("{api}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Promise: an event id is claimed only by an accepted event. A forged copy (bad signature,
/// with `requireSignature`) and the same id from a tenant that is not configured, arriving
/// first, are recorded as refused; the genuine event after them is still handled. (Before:
/// the first row claimed the id and the genuine event was dropped as a duplicate.)
#[tokio::test]
async fn a_forged_copy_or_a_foreign_tenant_does_not_claim_the_event_id() {
    let s = Setup::new("          requireSignature: true\n").await;
    let mut listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);

    // The same id from a tenant that is not configured.
    let foreign = String::from_utf8(body.clone())
        .unwrap()
        .replace(fixtures::TENANT, "another-tenant");
    s.publish("qscloud/app/reload/another-tenant", foreign.as_bytes())
        .await;
    s.wait_state(&id, State::Skipped).await;
    // A forged copy: the genuine body with a signature that does not match.
    mqtt::publish(s.broker.port, FIXTURES[0].1, &body, Some(&"0".repeat(64))).await;
    listener
        .wait_for_output("signature check failed; event rejected", 1, LIMIT)
        .await;

    // The genuine event is handled: enriched, its script log on disk.
    s.publish(FIXTURES[0].1, &body).await;
    let entry = s.wait_state(&id, State::Done).await;
    assert_eq!(entry.tenant_id, fixtures::TENANT);
    assert!(s
        .script_log(
            "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f",
            "673d9f1c2a4b5c6d7e8f9012"
        )
        .exists());
    // Resent genuine events are still duplicates.
    s.publish(FIXTURES[0].1, &body).await;
    listener
        .wait_for_output("duplicate event; already recorded", 1, LIMIT)
        .await;
    let rows: Vec<State> = s
        .journal()
        .await
        .recent(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
}

/// Promise: rotating the webhook's secret loses nothing (docs/deploy.md "Rotating the secret"). With
/// `requireSignature`, events signed with the tenant's `webhookSecretPrevious` are accepted
/// beside those signed with `webhookSecret`; a third secret is still refused. (Before: the
/// listener had one secret per tenant and rejected every event signed with the other one.)
#[tokio::test]
async fn events_signed_with_the_previous_secret_are_accepted_during_a_rotation() {
    const PREVIOUS: &str = "previous-webhook-secret-0123456789abcd";
    let s = Setup::with(common::Options {
        forward: "          requireSignature: true\n",
        tenant: &format!("          webhookSecretPrevious: {PREVIOUS}\n"),
        ..Default::default()
    })
    .await;
    let mut listener = s.start(true).await;
    let sign =
        |secret: &str, body: &[u8]| qlik_events::sign(&qlik_events::Secret::new(secret), body);
    let (new_id, new_body) = common::numbered_failure(0);
    let (old_id, old_body) = common::numbered_failure(1);
    let (other_id, other_body) = common::numbered_failure(2);
    s.publish(FIXTURES[0].1, &new_body).await;
    mqtt::publish(
        s.broker.port,
        FIXTURES[0].1,
        &old_body,
        Some(&sign(PREVIOUS, &old_body)),
    )
    .await;
    let third = sign("a-third-secret-nobody-configured-01234", &other_body);
    mqtt::publish(s.broker.port, FIXTURES[0].1, &other_body, Some(&third)).await;
    s.wait_state(&new_id, State::Done).await;
    s.wait_state(&old_id, State::Done).await;
    s.wait_state(&other_id, State::Rejected).await;
    listener
        .wait_for_output("signed with the tenant's webhookSecretPrevious", 1, LIMIT)
        .await;
}

/// Promise: `sent` means the receiver got the alert. A receiver that redirects (301 would be
/// followed as a GET without the alert, 307 would send it to a URL nobody configured) gets one
/// request, and the delivery is recorded `failed` with where it pointed. (Before: the 301 was
/// followed and the delivery recorded `sent`.)
#[tokio::test]
async fn an_alert_receiver_that_redirects_is_a_failed_delivery() {
    use qlik_listener::journal::DeliveryState;
    use relay_tests::fakes::{Fault, HttpReceiver};
    let hook = HttpReceiver::start().await;
    let tenant = format!(
        "          alert:\n            webhookNotification:\n              reloadAppFailure:\n                enable: true\n                urls: [\"{}\"]\n",
        hook.url("/alerts")
    );
    let s = Setup::with(common::Options {
        tenant: &tenant,
        ..Default::default()
    })
    .await;
    let _listener = s.start(true).await;
    for (i, status) in [301u16, 307].into_iter().enumerate() {
        hook.inject(&[Fault::Redirect(status, "/moved?token=secret-in-query")]);
        let (id, body) = common::numbered_failure(i * 2);
        s.publish(FIXTURES[0].1, &body).await;
        let journal = s.journal().await;
        let delivery = relay_tests::wait::until(LIMIT, "a final delivery", || {
            let journal = journal.clone();
            let id = id.clone();
            async move {
                let d = journal.deliveries(&id).await.unwrap();
                d.into_iter().find(|d| d.state.is_final())
            }
        })
        .await;
        assert_eq!(delivery.state, DeliveryState::Failed, "HTTP {status}");
        let error = delivery.last_error.unwrap();
        assert!(
            error.contains(&format!("HTTP {status} redirect to {}", hook.url("/moved"))),
            "{error}"
        );
        assert!(!error.contains("secret-in-query"), "{error}");
    }
    let requests = hook.requests();
    assert_eq!(
        requests.len(),
        2,
        "one request per alert, no redirect followed"
    );
    assert!(requests.iter().all(|r| r.path == "/alerts"));
}

/// Publishes three failures while the journal refuses writes, and waits until the listener
/// says it could not record them; returns (id, body) of each.
async fn publish_while_the_journal_refuses(
    s: &Setup,
    listener: &mut relay_tests::process::Running,
) -> Vec<(String, Vec<u8>)> {
    let events: Vec<(String, Vec<u8>)> = (0..3).map(common::numbered_failure).collect();
    for (_, body) in &events {
        s.publish(FIXTURES[0].1, body).await;
    }
    listener
        .wait_for_output("could not record the event", 1, LIMIT)
        .await;
    events
}

/// Promise: a journal fault costs a delay, never the events, and needs no restart. Another
/// process holds the journal's write lock (as a backup tool or a full disk would make every
/// write fail) while events arrive: nothing is acknowledged, `/readyz` says why. Once the lock
/// is released the held events are recorded and handled, `/readyz` is green again and later
/// events flow. (Before: the unacknowledged messages were only redelivered on a reconnect, so
/// nothing was recorded again until a restart.)
#[tokio::test]
async fn the_listener_resumes_by_itself_after_a_journal_fault() {
    let (s, mut listener, api) = with_api("").await;
    let ready = || readyz(&api);
    assert_eq!(ready().await.0, 200);

    // Another writer holds the lock: every write of the listener fails after its busy timeout.
    let blocker = rusqlite::Connection::open(s.dir.path().join("journal.sqlite")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let events = publish_while_the_journal_refuses(&s, &mut listener).await;
    let (status, why) = ready().await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("events cannot be recorded"), "{why}");

    // The fault goes away: everything held is recorded and handled, without a restart.
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    for (id, _) in &events {
        s.wait_state(id, State::Done).await;
    }
    relay_tests::wait::until(LIMIT, "/readyz to be green again", || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
    let (id, body) = common::numbered_failure(3);
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(&id, State::Done).await;
}

/// Promise: the listener acknowledges a message only after it is committed to the journal.
/// Deterministically stopped between receipt and commit: the journal's write lock is held, three
/// events arrive (received, not recordable), and the listener is killed (SIGKILL). After the
/// lock is released and the listener restarts, the broker delivers all three again and they are
/// handled: had any been acknowledged before its commit, the broker would have dropped it.
#[tokio::test]
async fn a_message_is_acknowledged_only_after_its_commit() {
    let (s, mut listener, _api) = with_api("").await;
    let blocker = rusqlite::Connection::open(s.dir.path().join("journal.sqlite")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let events = publish_while_the_journal_refuses(&s, &mut listener).await;
    listener.kill().await;
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let journal = s.journal().await;
    for (id, _) in &events {
        assert!(
            journal.get(id).await.unwrap().is_none(),
            "{id} was not recorded before the kill"
        );
    }
    let _again = s.start(false).await;
    for (id, _) in &events {
        s.wait_state(id, State::Done).await;
    }
}

/// A failed-reload event of about `bytes` bytes (a long error message), with id `id`.
fn sized_event(id: &str, bytes: usize) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["id"] = id.into();
    v["data"]["errors"] = serde_json::json!(["e".repeat(bytes)]);
    serde_json::to_vec(&v).unwrap()
}

/// Promise: the two halves agree on one size limit (`qlik_events::MAX_EVENT_BYTES`, 16 MiB),
/// with MQTT 5 and 3.1.1. A 2 MiB event the forwarder (`MAX_BODY_BYTES` at its ceiling)
/// answered 200 for is recorded and handled; a 17 MiB message published around the forwarder
/// is recorded as rejected and acknowledged once, and the next event flows. (Before: the
/// listener's limit was 1 MiB: with MQTT 5 the broker dropped the 2 MiB event silently after
/// the 200, with 3.1.1 the listener reconnected in a loop and recorded nothing more.)
#[tokio::test]
async fn one_size_limit_for_the_whole_pipeline_with_both_protocols() {
    for protocol in ["5", "3.1.1"] {
        let s = Setup::with(common::Options {
            broker: &format!("            protocolVersion: \"{protocol}\"\n"),
            ..Default::default()
        })
        .await;
        let mut listener = s.start(true).await;
        let bin = relay_tests::process::workspace_bin("qlik-webhook");
        let (_forwarder, base) = relay_tests::process::serve_forwarder(
            bin.to_str().unwrap(),
            &[
                ("QLIK_WEBHOOK_SECRET", fixtures::SECRET.to_owned()),
                ("MQTT_URL", s.broker.url()),
                ("MAX_BODY_BYTES", qlik_events::MAX_EVENT_BYTES.to_string()),
            ],
        )
        .await;
        let big = sized_event(&format!("big-{protocol}"), 2 * 1024 * 1024);
        let status = reqwest::Client::new()
            .post(format!("{base}/webhook"))
            .header("Qlik-Signature", fixtures::sign(&big))
            .body(big)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "MQTT {protocol}");
        s.wait_state(&format!("big-{protocol}"), State::Done).await;

        let huge_id = format!("huge-{protocol}");
        s.publish(FIXTURES[0].1, &sized_event(&huge_id, 17 * 1024 * 1024))
            .await;
        let entry = s.wait_state(&huge_id, State::Rejected).await;
        assert!(
            entry.note.unwrap().starts_with("too large"),
            "MQTT {protocol}"
        );
        let (id, body) = common::numbered_failure(0);
        s.publish(FIXTURES[0].1, &body).await;
        s.wait_state(&id, State::Done).await;
        listener
            .wait_for_output("event too large; recorded as rejected", 1, LIMIT)
            .await;
        assert_eq!(
            listener
                .output()
                .iter()
                .filter(|l| l.contains("event too large; recorded"))
                .count(),
            1,
            "MQTT {protocol}: acknowledged once, not redelivered"
        );
    }
}

/// Promise of the broker configuration we ship (`infra/mosquitto/mosquitto.conf`): an event
/// the broker acknowledged while the listener was away survives a broker crash (SIGKILL, no
/// clean shutdown) once the broker's next snapshot is written, at most `autosave_interval`
/// (5 s) later, and reaches the listener when both are back. (With Mosquitto's default of 30
/// minutes, a crash lost everything queued since the last clean stop.)
#[tokio::test]
async fn a_queued_event_survives_a_broker_crash_with_the_shipped_config() {
    let mut s = Setup::with(common::Options {
        shipped_broker: true,
        ..Default::default()
    })
    .await;
    let mut listener = s.start(true).await;
    listener.kill().await;
    let store = s.broker.store().expect("a persistent broker");
    let (id, body) = common::numbered_failure(0);
    // Acknowledged by the broker when this returns.
    s.publish(FIXTURES[0].1, &body).await;
    let acked = std::time::SystemTime::now();
    // The next snapshot written after the PUBACK holds the event (Mosquitto handles messages
    // and snapshots on one thread). Awaited as an event, not a fixed time.
    let snapshot = || {
        let store = store.clone();
        async move {
            let written = std::fs::metadata(&store).and_then(|m| m.modified()).ok();
            written.filter(|w| *w > acked).map(|_| ())
        }
    };
    relay_tests::wait::until(Duration::from_secs(15), "a broker snapshot", snapshot).await;
    s.broker.stop().await; // SIGKILL
    s.broker.restart().await;
    let _listener = s.start(false).await;
    s.wait_state(&id, State::Done).await;
}

/// Promise: the publish API (`PUT /v4/mqttpublishmessage`) cannot be reached through DNS
/// rebinding, nor used to forge events into the listener's own pipeline. A request whose `Host`
/// is a foreign name gets 403 and publishes nothing; a topic under the Qlik Cloud subscription
/// gets 403 and no event is recorded; a normal publish still works. (Before: any `Host` was
/// served, and a forged failure published under `qscloud/` was recorded and alerted.)
#[tokio::test]
async fn the_publish_api_refuses_foreign_hosts_and_the_events_subscription() {
    let (s, _listener, api) =
        with_api("  restServerEndpointsEnable:\n    mqttPublishMessage: true\n").await;
    let mut sub = mqtt::Subscriber::connect(s.broker.port, "qliksense/#").await;
    let http = reqwest::Client::new();
    let put = |host: Option<&str>, topic: &str, message: String| {
        let mut request = http
            .put(format!("{api}/v4/mqttpublishmessage"))
            .json(&serde_json::json!({ "topic": topic, "message": message }));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // A browser tricked by DNS rebinding sends the attacker's name as Host.
    let (status, why) = put(Some("evil.example:8081"), "qliksense/x", "rebound".into()).await;
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("allowedHosts"), "{why}");
    for path in ["/readyz", "/metrics"] {
        let r = http
            .get(format!("{api}{path}"))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
    }

    // A forged failure onto the listener's own subscription.
    let (forged_id, forged) = common::numbered_failure(0);
    let message = String::from_utf8(forged).unwrap();
    let (status, why) = put(None, FIXTURES[0].1, message).await;
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("qscloud/#"), "{why}");

    // What is allowed still works, and is the first thing published.
    let (status, why) = put(None, "qliksense/x", "fine".into()).await;
    assert_eq!(status, 201, "{why}");
    let first = sub.expect().await;
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("qliksense/x", &b"fine"[..])
    );
    let (id, body) = common::numbered_failure(1);
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(&id, State::Done).await;
    assert!(s.journal().await.get(&forged_id).await.unwrap().is_none());
}

/// Promise: secrets in the config file are not left open to other users without a word, and
/// `check-config` never prints a credential. Like ssh with a private key: a file other users
/// can read while it holds a literal secret, or write at all, is reported (file, mode and the
/// keys) by `check-config` and at start-up; a `tenantUrl` with a password in it is refused
/// without repeating it. (Before: silence, and the URL was printed in the summary.)
#[cfg(unix)]
#[tokio::test]
async fn open_config_files_are_reported_and_credentials_never_printed() {
    use std::os::unix::fs::PermissionsExt as _;
    const LITERAL: &str = "literal-previous-secret-0123456789abc";
    let s = Setup::with(common::Options {
        tenant: &format!("          webhookSecretPrevious: {LITERAL}\n"),
        ..Default::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let env = s.env();
    let args = ["check-config", "--config", config.as_str()];
    let check = || relay_tests::process::run(common::BIN, &args, &env);
    let chmod =
        |mode| std::fs::set_permissions(&s.config, std::fs::Permissions::from_mode(mode)).unwrap();

    chmod(0o644);
    let (code, out) = check().await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{config} holds secrets (Butler.qlikSenseCloud.event.mqtt.tenant.webhookSecretPrevious) and is readable by every user (mode 0644)")), "{out}");
    assert!(!out.contains(LITERAL), "{out}");
    chmod(0o666);
    let (_, out) = check().await;
    assert!(
        out.contains("is writable by other users (mode 0666)"),
        "{out}"
    );
    chmod(0o640);
    let (_, out) = check().await;
    assert!(!out.contains("warning"), "{out}");
    // The file is private but its folder is world-writable (before: no warning): anyone could
    // replace it. With the sticky bit, as /tmp has, only the owner can.
    let dir = s.config.parent().unwrap().to_owned();
    let dir_mode =
        |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir_mode(0o777);
    let (_, out) = check().await;
    assert!(
        out.contains("which every user can write (mode 0777)"),
        "{out}"
    );
    dir_mode(0o1777);
    let (_, out) = check().await;
    assert!(!out.contains("which every user can write"), "{out}");
    dir_mode(0o700);
    // At start-up too.
    chmod(0o644);
    let mut listener = s.start(true).await;
    listener
        .wait_for_output("is readable by every user (mode 0644)", 1, LIMIT)
        .await;
    listener.kill().await;

    // A password in tenantUrl: refused, and not printed.
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let with_password = yaml.replacen(
        "tenantUrl: http://",
        "tenantUrl: http://admin:hunter2-password@",
        1,
    );
    assert_ne!(yaml, with_password);
    std::fs::write(&s.config, with_password).unwrap();
    let (code, out) = check().await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("tenant.tenantUrl: must not contain a user name or password"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

/// A failed-reload event with id `id` whose time is `days_ago` days before now.
fn event_from(id: &str, days_ago: i64) -> Vec<u8> {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["id"] = id.into();
    v["time"] = at.into();
    serde_json::to_vec(&v).unwrap()
}

/// Promise: a replay after the journal forgot the original is not alerted again. Events older
/// than `journal.retentionDays` (at least 8: Qlik resends deliveries up to 7 days old) are
/// recorded as rejected; a resend within the window is handled. (Before: once the first
/// delivery's row was pruned, a replay of the same signed body alerted again.)
#[tokio::test]
async fn a_replay_older_than_the_journal_remembers_is_refused() {
    let s = Setup::with(common::Options {
        retention_days: Some(8),
        ..Default::default()
    })
    .await;
    let _listener = s.start(true).await;
    let old = event_from("replayed-9-days-later", 9);
    s.publish(FIXTURES[0].1, &old).await;
    let entry = s.wait_state("replayed-9-days-later", State::Rejected).await;
    assert_eq!(
        entry.note.as_deref(),
        Some("older than journal.retentionDays (8 days)")
    );
    let resent = event_from("resent-after-6-days", 6);
    s.publish(FIXTURES[0].1, &resent).await;
    s.wait_state("resent-after-6-days", State::Done).await;

    // A retention shorter than Qlik's resend window is a configuration error.
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        yaml.replace("retentionDays: 8", "retentionDays: 7"),
    )
    .unwrap();
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &["check-config", "--config", &config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("journal.retentionDays: expected a whole number from 8 to 3650"),
        "{out}"
    );
}

/// Promise: a script log of any size is stored whole on disk and costs the listener a bounded
/// amount of memory and journal space. A 100 MB single-line log (as a runaway `TRACE` makes):
/// the file under `logDirectory` holds all of it, the listener keeps at most its first and last
/// 512 KiB while reading, the alert data (and so the journal row) at most 64,000 characters of
/// head and of tail, and the alert goes out. (Before: the log was held whole, several
/// times over: ~850 MB resident and a ~200 MB journal row. The resident memory is measured in
/// `listener/benches`, not here.)
#[tokio::test]
async fn a_100_mb_script_log_is_stored_whole_and_kept_bounded() {
    let s = Setup::new("").await;
    let total = 100 * 1024 * 1024;
    let mut log = String::with_capacity(total);
    log.push_str("START ");
    log.push_str(&"x".repeat(total - 10));
    log.push_str(" END");
    s.api.set_script_log(log);
    let _listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    let entry = s.wait_state(&event_id(&body), State::Done).await;

    let file = s.script_log(
        "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f",
        "673d9f1c2a4b5c6d7e8f9012",
    );
    let stored = std::fs::read(&file).unwrap();
    assert_eq!(stored.len(), total, "the whole log on disk");
    assert!(stored.starts_with(b"START ") && stored.ends_with(b" END"));
    let kept = entry.enrichment.expect("enriched").len();
    assert!(kept < 256 * 1024, "journal row: {kept} bytes");
    let data = common::data(
        &s.journal()
            .await
            .get(&event_id(&body))
            .await
            .unwrap()
            .unwrap(),
    );
    let tail = data["scriptLogTail"].as_str().unwrap();
    assert!(
        tail.ends_with(" END"),
        "the end of the log reaches the alert"
    );
}

/// Promise: the journal file deleted or made read-only while the listener runs is noticed,
/// said in `/readyz` and the log, and loses nothing. Deleted (with its WAL): the listener
/// writes it again from the database it has open, and a restart finds every event. Read-only:
/// `/readyz` is red (a restart would fail) until it is writable again. (Before: SQLite went on
/// writing to the deleted file, `/readyz` stayed green, and a restart lost the journal.)
#[cfg(unix)]
#[tokio::test]
async fn a_deleted_or_read_only_journal_file_is_noticed_and_nothing_lost() {
    let (s, mut listener, api) = with_api("").await;
    let ready = || readyz(&api);
    let (first, body) = common::numbered_failure(0);
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(&first, State::Done).await;

    let path = s.dir.path().join("journal.sqlite");
    for file in ["journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"] {
        let _ = std::fs::remove_file(s.dir.path().join(file));
    }
    listener
        .wait_for_output(
            "the journal file was deleted while the listener ran; written again",
            1,
            LIMIT,
        )
        .await;
    assert!(path.exists());
    let (second, body) = common::numbered_failure(1);
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(&second, State::Done).await;

    // Read-only: red until writable again.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let (status, why) = ready().await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("is read-only"), "{why}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    relay_tests::wait::until(LIMIT, "/readyz green", || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;

    // A restart finds both events.
    listener.kill().await;
    let journal = s.journal().await;
    for id in [&first, &second] {
        assert_eq!(
            journal.get(id).await.unwrap().unwrap().state,
            State::Done,
            "{id}"
        );
    }
}

/// Unmounts a test's tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The same promise as [`the_listener_resumes_by_itself_after_a_journal_fault`], with the
/// fault the issue reproduced: the journal on a 2 MB tmpfs that fills up while events arrive,
/// then is freed. Needs permission to mount (root, as in CI, where `CI` is set and not mounting
/// fails the test); elsewhere it says it was skipped.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_under_the_journal_costs_a_delay_not_the_events() {
    let s = Setup::new("").await;
    let disk = s.dir.path().join("small-disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // CI runs as root and must run it: there, not mounting is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but a tmpfs cannot be mounted: this test must run in CI (as root)"
        );
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the lock variant above still runs"
        );
        return;
    }
    let _unmount = Mounted(disk.clone());
    let journal_path = disk.join("journal.sqlite");
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        yaml.replace(
            "path: journal.sqlite",
            &format!("path: {}", journal_path.display()),
        ),
    )
    .unwrap();
    let mut listener = s.start(true).await;

    // Fill the disk.
    let filler = disk.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f
            .write_all(&[0u8; 16 * 1024])
            .and_then(|_| f.sync_all())
            .is_ok()
        {}
    }
    let events = publish_while_the_journal_refuses(&s, &mut listener).await;

    // Space again: everything held is recorded and handled, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let journal = qlik_listener::journal::Journal::open(&journal_path)
        .await
        .unwrap();
    for (id, _) in &events {
        relay_tests::wait::until(LIMIT, &format!("event {id} to be done"), || {
            let journal = journal.clone();
            let id = id.clone();
            async move {
                journal
                    .get(&id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|e| e.state == State::Done)
            }
        })
        .await;
    }
    listener.kill().await;
}

/// A Qlik API key that Qlik Cloud refuses is said at start-up, naming the setting (not the
/// tenant id), and `/readyz` keeps saying it; events are still recorded and alerted.
#[tokio::test]
async fn a_refused_api_key_is_named_at_start_and_in_readyz() {
    let s = Setup::with(common::Options {
        butler: API,
        ..Default::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut env = s.env();
    for (name, value) in env.iter_mut() {
        if *name == "QLIK_TOKEN" {
            *value = "an-expired-api-key-0123456789".into();
        }
    }
    let mut listener =
        relay_tests::process::Running::spawn(common::BIN, &["--config", &config], &env);
    let api = listener.wait_for_line("qlik-listener API on ", LIMIT).await;
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    let out = listener.output().join("\n");
    assert!(
        out.contains("Qlik Cloud refused the API key of Butler.qlikSenseCloud.event.mqtt.tenant.auth.jwt.token"),
        "{out}"
    );
    assert!(
        !out.contains("an-expired-api-key"),
        "the key is never shown: {out}"
    );
    let (status, body) = readyz(&api).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("auth.jwt.token"), "{body}");
    // The event is still recorded (and alerted, without the API's details).
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(
        &common::event_id(&body),
        qlik_listener::journal::State::Done,
    )
    .await;
}
