//! Reconciliation (issue #20): a failed reload that Qlik Cloud's reloads API lists but that
//! never arrived over the webhook path is alerted once, saying so; one that did arrive is not
//! alerted again; a failing API costs a warning, never the MQTT path.

mod common;

use common::{Options, Setup, LIMIT};
use qlik_listener::journal::State;
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures::{self, FIXTURES};
use relay_tests::wait;
use serde_json::json;

const FINAL_TOPIC: &str = FIXTURES[4].1;
const APP: &str = "4f2c9d1e-7a6b-4c3d-9e8f-0000000000bb";

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A reload as `GET /api/v1/reloads` lists it.
fn listed(id: &str, status: &str) -> serde_json::Value {
    json!({
        "id": id, "appId": APP, "tenantId": relay_tests::fixtures::TENANT, "type": "chronos",
        "status": status, "partial": false, "creationTime": now_rfc3339(),
        "startTime": now_rfc3339(), "endTime": now_rfc3339(),
        "errorCode": "EngineReloadFailed", "errorMessage": "Table 'Orders' not found",
    })
}

/// The webhook's `com.qlik.v1.reload.finished` for `reload`, failed.
fn final_failed(id: &str, reload: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("reload-failed.cloudevents.json")).unwrap();
    v["id"] = json!(id);
    v["data"]["id"] = json!(reload);
    v["data"]["appId"] = json!(APP);
    serde_json::to_vec(&v).unwrap()
}

async fn setup(hook: &HttpReceiver, reconcile: &str) -> Setup {
    let tenant = format!(
        "          alert:
            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{}\"]
",
        hook.url("/alerts")
    );
    Setup::with(Options {
        tenant: &tenant,
        reconcile,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_failed_reload_that_never_arrived_is_alerted_once_and_says_so() {
    let hook = HttpReceiver::start().await;
    // First without reconciliation: one failed reload arrives over the webhook path.
    let s = setup(&hook, "").await;
    let mut listener = s.start(true).await;
    s.publish(FINAL_TOPIC, &final_failed("seen-1-event", "seen-1"))
        .await;
    s.wait_state("seen-1-event", State::Done).await;
    listener.kill().await;
    // Qlik Cloud's record: that reload, one that never came over the webhook, one still
    // running. The listener starts again, reconciling every second.
    s.api.add_reload(listed("seen-1", "FAILED"));
    s.api.add_reload(listed("missed-1", "EXCEEDED_LIMIT"));
    s.api.add_reload(listed("running-1", "RELOADING"));
    let config = std::fs::read_to_string(&s.config).unwrap().replacen(
        "    reconcile:\n      intervalSeconds: 0\n",
        "    reconcile:\n      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: 1\n",
        1,
    );
    std::fs::write(&s.config, config).unwrap();
    let _listener = s.start(false).await;

    let entry = s.wait_state("reconciled-missed-1", State::Done).await;
    assert_eq!(entry.reload_id.as_deref(), Some("missed-1"));
    let alerts = wait::until(LIMIT, "two alerts", || async {
        let a = hook.delivered();
        (a.len() >= 2).then_some(a)
    })
    .await;
    let missed = alerts
        .iter()
        .map(|r| r.json())
        .find(|a| a["alert"]["reloadId"] == "missed-1")
        .expect("the missed reload is alerted");
    let note = missed["alert"]["alertNote"].as_str().unwrap();
    assert!(
        note.contains("Not received over the webhook: found by reconciliation"),
        "{note}"
    );
    assert_eq!(
        missed["alert"]["errorMessage"],
        "Field \"Amount\" not found"
    );
    assert_eq!(missed["alert"]["appId"], APP);
    let journal = s.journal().await;
    assert!(journal.get("reconciled-seen-1").await.unwrap().is_none());
    assert!(journal.get("reconciled-running-1").await.unwrap().is_none());

    // The webhook's event for the missed reload arriving late alerts nobody again, and later
    // runs (every second) do not record it twice.
    s.publish(FINAL_TOPIC, &final_failed("missed-1-late", "missed-1"))
        .await;
    let late = s.wait_state("missed-1-late", State::Done).await;
    assert!(
        late.note
            .as_deref()
            .unwrap_or_default()
            .contains("alerted with event reconciled-missed-1"),
        "{late:?}"
    );
    let runs_before = s.api.calls_to("/api/v1/reloads?");
    wait::until(LIMIT, "two more reconciliation runs", || async {
        (s.api.calls_to("/api/v1/reloads?") >= runs_before + 2).then_some(())
    })
    .await;
    let received: Vec<_> = hook.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(received.len(), 2, "{received:?}");
}

#[tokio::test]
async fn a_failing_reloads_api_costs_a_warning_not_the_mqtt_path() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: 1\n",
    )
    .await;
    s.api.set_reloads_status(Some(403));
    s.api.add_reload(listed("missed-2", "FAILED"));
    let mut listener = s.start(true).await;
    listener
        .wait_for_output("reconciliation with Qlik Cloud failed", 1, LIMIT)
        .await;
    // It keeps failing, once a second: said once, not at every run.
    let runs = s.api.calls_to("/api/v1/reloads?");
    wait::until(LIMIT, "three more failed runs", || async {
        (s.api.calls_to("/api/v1/reloads?") >= runs + 3).then_some(())
    })
    .await;
    let said = listener
        .output()
        .iter()
        .filter(|l| l.contains("reconciliation with Qlik Cloud failed"))
        .count();
    assert_eq!(said, 1, "warned once for the failing streak");
    // Meanwhile events over MQTT are handled as ever.
    s.publish(FINAL_TOPIC, &final_failed("mqtt-event", "via-mqtt"))
        .await;
    s.wait_state("mqtt-event", State::Done).await;
    assert_eq!(hook.delivered().len(), 1);
    // Once the API answers again, the next run catches up from where the last good one ended.
    s.api.set_reloads_status(None);
    s.wait_state("reconciled-missed-2", State::Done).await;
    let out = listener.output().join("\n");
    assert!(out.contains("HTTP 403"), "the warning says why: {out}");
    listener
        .wait_for_output("reconciliation with Qlik Cloud works again", 1, LIMIT)
        .await;
    assert_eq!(hook.delivered().len(), 2);
}

/// More failed reloads than one page, and Qlik's rate limit on the way: every one is found,
/// once, and marked in `history` as found by reconciliation.
#[tokio::test]
async fn reconciliation_pages_through_the_list_and_waits_out_a_429() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      intervalSeconds: 3600\n      graceSeconds: 0\n      lookBackHours: 1\n",
    )
    .await;
    for i in 0..105 {
        s.api.add_reload(listed(&format!("paged-{i:03}"), "FAILED"));
    }
    // The list's first page is answered 429 with Retry-After.
    s.api
        .inject_on("/api/v1/reloads?", &[relay_tests::fakes::Fault::TooMany(1)]);
    let _listener = s.start(true).await;
    for i in [0, 99, 100, 104] {
        s.wait_state(&format!("reconciled-paged-{i:03}"), State::Done)
            .await;
    }
    let pages = s
        .api
        .calls()
        .iter()
        .filter(|c| c.path_and_query.starts_with("/api/v1/reloads?"))
        .map(|c| c.path_and_query.clone())
        .collect::<Vec<_>>();
    assert_eq!(pages.len(), 3, "the 429, then two pages: {pages:?}");
    assert!(pages[2].contains("next=100"), "{pages:?}");
    wait::until(LIMIT, "105 alerts", || async {
        (hook.delivered().len() == 105).then_some(())
    })
    .await;
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &[
            "history",
            "--json",
            "--limit",
            "500",
            "--config",
            s.config.to_str().unwrap(),
        ],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 105);
    assert!(
        rows.iter().all(|r| r["arrivedVia"] == "reconciliation"),
        "{rows:?}"
    );
}

/// The webhook watchdog: Qlik disabling the webhook that feeds the forwarder is alerted once on
/// the tenant's channels and shown in `/readyz` and `/metrics`; `webhook enable` is the way back.
#[tokio::test]
async fn a_webhook_disabled_by_qlik_is_alerted_once_and_shown_until_enabled() {
    let hook = HttpReceiver::start().await;
    let tenant = format!(
        "          alert:
            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{}\"]
                alertEnableByTag: {{ enable: true, tag: critical }}
",
        hook.url("/alerts")
    );
    let s = Setup::with(Options {
        tenant: &tenant,
        webhook_watch:
            "      intervalSeconds: 1\n      expectedUrl: https://relay.example.com/webhook\n",
        butler:
            "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n",
        ..Options::default()
    })
    .await;
    s.api.add_webhook(json!({
        "name": "qlik-cloud-mqtt-relay", "url": "https://relay.example.com/webhook",
        "enabled": true, "eventTypes": ["com.qlik.v1.app.reload.finished"],
    }));
    let config = s.config.to_str().unwrap().to_owned();
    let mut listener =
        relay_tests::process::Running::spawn(common::BIN, &["--config", &config], &s.env());
    let api = listener.wait_for_line("qlik-listener API on ", LIMIT).await;
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    let ready = || async {
        let r = reqwest::get(format!("{api}/readyz")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // Healthy at the first look: no alert.
    let checks = s.api.calls_to("/api/core/webhooks");
    wait::until(LIMIT, "two checks", || async {
        (s.api.calls_to("/api/core/webhooks") >= checks + 2).then_some(())
    })
    .await;
    assert_eq!(ready().await.0, 200);
    assert!(hook.delivered().is_empty());

    s.api.update_webhook(
        "qlik-cloud-mqtt-relay",
        json!({ "enabled": false, "disabledReason": "too many failed deliveries" }),
    );
    let alerts = wait::until(LIMIT, "the watchdog's alert", || async {
        let a = hook.delivered();
        (!a.is_empty()).then_some(a)
    })
    .await;
    let alert = alerts[0].json();
    assert_eq!(
        alert["alert"]["alertTitle"],
        "Qlik Cloud webhook needs attention"
    );
    let said = alert["alert"]["errorMessage"].as_str().unwrap();
    assert!(
        said.contains("Qlik disabled the webhook qlik-cloud-mqtt-relay (too many failed deliveries): events are not being sent"),
        "{said}"
    );
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Qlik disabled the webhook"), "{body}");
    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "qlik_listener_webhook_healthy{{tenant=\"{}\"}} 0",
            fixtures::TENANT
        )),
        "{metrics}"
    );
    // Several checks later: still one alert for the one change (the tag rule, which is about
    // apps, did not suppress it either).
    let checks = s.api.calls_to("/api/core/webhooks");
    wait::until(LIMIT, "three more checks", || async {
        (s.api.calls_to("/api/core/webhooks") >= checks + 3).then_some(())
    })
    .await;
    assert_eq!(hook.delivered().len(), 1);

    // The way back: `webhook enable`; the recovery is said once too.
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &["webhook", "enable", "--config", &config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("enabled webhook wh-1"), "{out}");
    let alerts = wait::until(LIMIT, "the recovery alert", || async {
        let a = hook.delivered();
        (a.len() >= 2).then_some(a)
    })
    .await;
    assert_eq!(
        alerts[1].json()["alert"]["alertTitle"],
        "Qlik Cloud webhook healthy again"
    );
    wait::until(LIMIT, "ready again", || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
}
