//! One alert per failed reload (issue #19), against Mosquitto and the real binary: Qlik sends
//! `app.reload.finished` for each attempt and `reload.finished` once with the final outcome;
//! a user wants one alert per failed reload and none for an attempt a retry fixed.

mod common;

use common::{Options, Setup, LIMIT};
use qlik_listener::journal::{DeliveryState, Journal, State};
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures::{self, FIXTURES};
use relay_tests::wait;
use serde_json::json;

const ATTEMPT_TOPIC: &str = FIXTURES[0].1;
const FINAL_TOPIC: &str = FIXTURES[4].1;
const APP: &str = "4f2c9d1e-7a6b-4c3d-9e8f-0000000000aa";

/// A failed attempt (`com.qlik.v1.app.reload.finished`, status error) of `reload`.
fn attempt(id: &str, reload: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["id"] = json!(id);
    v["toplevelresourceid"] = json!(APP);
    v["data"]["reloadId"] = json!(reload);
    serde_json::to_vec(&v).unwrap()
}

/// The final outcome (`com.qlik.v1.reload.finished`) of `reload`: `FAILED` or `SUCCEEDED`.
fn final_outcome(id: &str, reload: &str, status: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("reload-failed.cloudevents.json")).unwrap();
    v["id"] = json!(id);
    v["data"]["id"] = json!(reload);
    v["data"]["appId"] = json!(APP);
    v["data"]["status"] = json!(status);
    v["data"]["succeeded"] = json!(status == "SUCCEEDED");
    serde_json::to_vec(&v).unwrap()
}

/// A listener alerting on a webhook receiver and a file, with these `alerts:` settings.
async fn setup(hook: &HttpReceiver, alerts: &str) -> Setup {
    let tenant = format!(
        "          alert:
            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{}\"]
            fileNotification:
              reloadAppFailure: {{ enable: true, path: alerts.jsonl }}
",
        hook.url("/alerts")
    );
    let listener = format!("    alerts:\n{alerts}");
    Setup::with(Options {
        tenant: &tenant,
        listener: &listener,
        ..Options::default()
    })
    .await
}

/// The alerts written to the file channel, as the documents they are.
fn file_alerts(s: &Setup) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.dir.path().join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until every event of `ids` is done (nothing left that could still alert).
async fn all_done(s: &Setup, ids: &[&str]) {
    for id in ids {
        s.wait_state(id, State::Done).await;
    }
}

/// The note recorded with event `id` (empty while it is not recorded).
async fn note(journal: &Journal, id: &str) -> String {
    let entry = journal.get(id).await.unwrap();
    entry.and_then(|e| e.note).unwrap_or_default()
}

#[tokio::test]
async fn both_events_of_a_failed_reload_in_either_order_and_redelivered_give_one_alert() {
    let hook = HttpReceiver::start().await;
    let s = setup(&hook, "      waitForFinalOutcome: always\n").await;
    let _listener = s.start(true).await;

    // Reload A: the attempt, then the final outcome; reload B: the other way round. Each
    // message is delivered twice (as after a forwarder resend).
    let (a1, a2) = (
        attempt("a-attempt", "reload-a"),
        final_outcome("a-final", "reload-a", "FAILED"),
    );
    let (b1, b2) = (
        final_outcome("b-final", "reload-b", "FAILED"),
        attempt("b-attempt", "reload-b"),
    );
    for (topic, body) in [
        (ATTEMPT_TOPIC, &a1),
        (FINAL_TOPIC, &a2),
        (FINAL_TOPIC, &b1),
        (ATTEMPT_TOPIC, &b2),
        (ATTEMPT_TOPIC, &a1),
        (FINAL_TOPIC, &b1),
    ] {
        s.publish(topic, body).await;
    }
    all_done(&s, &["a-attempt", "a-final", "b-final", "b-attempt"]).await;
    let journal = s.journal().await;
    // Done means decided: each reload's deliveries are final, and belong to one event.
    for (alerting, quiet) in [("a-final", "a-attempt"), ("b-final", "b-attempt")] {
        let d = journal.deliveries(alerting).await.unwrap();
        assert_eq!(d.len(), 2, "{alerting}: {d:?}");
        assert!(d.iter().all(|d| d.state == DeliveryState::Sent), "{d:?}");
        assert!(
            journal.deliveries(quiet).await.unwrap().is_empty(),
            "{quiet}"
        );
        let why = note(&journal, quiet).await;
        assert!(why.contains(alerting), "{quiet}: {why}");
    }
    let received = hook.delivered();
    assert_eq!(received.len(), 2, "one alert per reload on the webhook");
    assert_eq!(file_alerts(&s).len(), 2, "one alert per reload in the file");

    // The final outcome's alert carries the attempt's data too (the engine's memory figure
    // is only in the attempt event).
    let a = received
        .iter()
        .map(|r| r.json())
        .find(|a| a["alert"]["reloadId"] == "reload-a")
        .expect("reload A alerted");
    assert_eq!(a["alert"]["eventId"], "a-final");
    assert_eq!(a["alert"]["peakMemoryBytes"], 187236352, "{a}");
    assert_eq!(a["alert"]["errorCode"], "EngineReloadFailed");
    assert_eq!(a["alert"]["alertNote"], "");
}

#[tokio::test]
async fn a_failed_attempt_that_succeeded_on_retry_gives_no_alert() {
    let hook = HttpReceiver::start().await;
    let s = setup(&hook, "      waitForFinalOutcome: always\n").await;
    let _listener = s.start(true).await;
    s.publish(ATTEMPT_TOPIC, &attempt("r-attempt-1", "reload-r"))
        .await;
    s.publish(
        FINAL_TOPIC,
        &final_outcome("r-final", "reload-r", "SUCCEEDED"),
    )
    .await;
    let entry = s.wait_state("r-attempt-1", State::Done).await;
    assert!(
        entry
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("succeeded on retry (event r-final)"),
        "{entry:?}"
    );
    let journal = s.journal().await;
    assert!(journal.deliveries("r-attempt-1").await.unwrap().is_empty());
    // A later failed attempt of the same reload (delivered late) changes nothing.
    s.publish(ATTEMPT_TOPIC, &attempt("r-attempt-2", "reload-r"))
        .await;
    s.wait_state("r-attempt-2", State::Done).await;
    // And a failure of another reload does alert: the channel works, nothing was held back.
    s.publish(FINAL_TOPIC, &final_outcome("x-final", "reload-x", "FAILED"))
        .await;
    s.wait_state("x-final", State::Done).await;
    let received: Vec<_> = hook.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["alert"]["reloadId"], "reload-x");
}

#[tokio::test]
async fn without_a_final_outcome_within_the_bound_one_alert_says_so() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      waitForFinalOutcome: always\n      finalOutcomeWaitSeconds: 2\n",
    )
    .await;
    let _listener = s.start(true).await;
    s.publish(ATTEMPT_TOPIC, &attempt("t-attempt", "reload-t"))
        .await;
    s.wait_state("t-attempt", State::Pending).await;
    let alerts = wait::until(LIMIT, "the alert after the wait", || async {
        let a = hook.delivered();
        (!a.is_empty()).then_some(a)
    })
    .await;
    let alert = alerts[0].json();
    assert_eq!(alert["alert"]["eventId"], "t-attempt");
    let said = alert["alert"]["alertNote"].as_str().unwrap();
    assert!(
        said.contains("did not report this reload's final outcome within 2 seconds"),
        "{said}"
    );
    // The final outcome arriving late does not alert again.
    s.publish(FINAL_TOPIC, &final_outcome("t-final", "reload-t", "FAILED"))
        .await;
    let entry = s.wait_state("t-final", State::Done).await;
    assert!(
        entry
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("alerted with event t-attempt"),
        "{entry:?}"
    );
    s.wait_state("t-attempt", State::Done).await;
    assert_eq!(hook.delivered().len(), 1);
    assert_eq!(file_alerts(&s).len(), 1);
}

#[tokio::test]
async fn a_webhook_without_final_outcomes_alerts_each_failed_attempt_at_once() {
    let hook = HttpReceiver::start().await;
    // The default (`auto`) with a tenant that never sent `reload.finished`: no waiting, even
    // though the default wait is half an hour.
    let s = setup(&hook, "      giveUpSeconds: 60\n").await;
    let _listener = s.start(true).await;
    s.publish(ATTEMPT_TOPIC, &attempt("n-attempt", "reload-n"))
        .await;
    s.wait_state("n-attempt", State::Done).await;
    let received = hook.delivered();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["alert"]["alertNote"], "");
}

#[tokio::test]
async fn a_restart_while_an_attempt_waits_still_decides_once() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      waitForFinalOutcome: always\n      finalOutcomeWaitSeconds: 3\n",
    )
    .await;
    let mut listener = s.start(true).await;
    // Reload W waits past a restart and then alerts; reload S's success arrives while the
    // listener is down.
    s.publish(ATTEMPT_TOPIC, &attempt("w-attempt", "reload-w"))
        .await;
    s.publish(ATTEMPT_TOPIC, &attempt("s-attempt", "reload-s"))
        .await;
    for id in ["w-attempt", "s-attempt"] {
        let journal = s.journal().await;
        wait::until(LIMIT, &format!("{id} waiting"), || {
            let journal = journal.clone();
            async move { note(&journal, id).await.contains("waiting").then_some(()) }
        })
        .await;
    }
    listener.kill().await;
    s.publish(
        FINAL_TOPIC,
        &final_outcome("s-final", "reload-s", "SUCCEEDED"),
    )
    .await;
    let _listener = s.start(false).await;
    all_done(&s, &["w-attempt", "s-attempt"]).await;
    let journal = s.journal().await;
    assert!(note(&journal, "s-attempt")
        .await
        .contains("succeeded on retry"));
    let received: Vec<_> = hook.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["alert"]["eventId"], "w-attempt");
    let d = journal.deliveries("w-attempt").await.unwrap();
    assert!(
        d.iter()
            .all(|d| d.state == DeliveryState::Sent && d.attempts == 1),
        "{d:?}"
    );
}
