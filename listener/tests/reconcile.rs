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
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "      intervalSeconds: 0\n",
        "      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: 1\n",
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
    assert_eq!(hook.delivered().len(), 2);
}
