//! Reconciliation: a failed reload whose outcome Qlik Cloud's reloads API knows but the webhook
//! path never brought is alerted once, saying why it was missed, against a Qlik Cloud stand-in
//! that pages, promises no order and lists reloads late; one that did arrive is not alerted
//! again; a failing API costs a warning, never the MQTT path.

mod common;

use common::{Options, Setup, LIMIT};
use qlik_listener::journal::State;
use relay_tests::fakes::{FakeQlikCloud, HttpReceiver};
use relay_tests::fixtures::{self, FIXTURES, TENANT};
use relay_tests::wait;
use serde_json::json;

const ATTEMPT_TOPIC: &str = FIXTURES[0].1;
const FINAL_TOPIC: &str = FIXTURES[4].1;
const APP: &str = "4f2c9d1e-7a6b-4c3d-9e8f-0000000000bb";

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn ago(minutes: i64) -> String {
    rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
}

/// A reload as `GET /api/v1/reloads` lists it, ended `ended` (RFC 3339).
fn listed_at(id: &str, status: &str, ended: &str) -> serde_json::Value {
    json!({
        "id": id, "appId": APP, "tenantId": TENANT, "type": "chronos",
        "status": status, "partial": false, "creationTime": ended,
        "startTime": ended, "endTime": ended,
        "errorCode": "EngineReloadFailed", "errorMessage": "Table 'Orders' not found",
    })
}

fn listed(id: &str, status: &str) -> serde_json::Value {
    listed_at(id, status, &ago(0))
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

/// The webhook's `com.qlik.v1.app.reload.finished` for `reload` (one attempt), with `status`.
fn attempt(id: &str, reload: &str, status: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["id"] = json!(id);
    v["data"]["reloadId"] = json!(reload);
    v["data"]["status"] = status;
    v["toplevelresourceid"] = json!(APP);
    serde_json::to_vec(&v).unwrap()
}

fn alert_block(hook: &HttpReceiver, path: &str) -> String {
    common::webhook_alert(&hook.url(path))
}

async fn setup_with(hook: &HttpReceiver, reconcile: &str, listener: &str) -> Setup {
    let tenant = alert_block(hook, "/alerts");
    Setup::with(Options {
        tenant: &tenant,
        reconcile,
        listener,
        ..Options::default()
    })
    .await
}

async fn setup(hook: &HttpReceiver, reconcile: &str) -> Setup {
    setup_with(hook, reconcile, "").await
}

/// Every second, no grace, a window of `hours`.
fn every_second(hours: u32) -> String {
    format!("      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: {hours}\n")
}

fn alerts_for(hook: &HttpReceiver, reload: &str) -> Vec<serde_json::Value> {
    hook.delivered()
        .iter()
        .map(|r| r.json())
        .filter(|a| a["alert"]["reloadId"] == reload)
        .collect()
}

/// Waits for `n` more reconciliation runs (list calls that started a run).
async fn runs(s: &Setup, n: usize) {
    let first_pages = |s: &Setup| {
        s.api
            .calls()
            .iter()
            .filter(|c| {
                c.path_and_query.starts_with("/api/v1/reloads?")
                    && !c.path_and_query.contains("next=")
                    && c.status != 0
            })
            .count()
    };
    let before = first_pages(s);
    wait::until(LIMIT, &format!("{n} more reconciliation runs"), || async {
        (first_pages(s) >= before + n).then_some(())
    })
    .await;
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
        &format!("    reconcile:\n{}", every_second(1)),
        1,
    );
    std::fs::write(&s.config, config).unwrap();
    let _listener = s.start(false).await;

    let found = format!("reconciled-{TENANT}-missed-1");
    let entry = s.wait_state(&found, State::Done).await;
    assert_eq!(entry.reload_id.as_deref(), Some("missed-1"));
    assert_eq!(
        entry.note.as_deref(),
        Some("found by reconciliation: never received over the webhook")
    );
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
        note.contains("Not received over the webhook: found by reconciliation with Qlik Cloud's reloads API (never received over the webhook)"),
        "{note}"
    );
    assert_eq!(missed["alert"]["appId"], APP);
    let journal = s.journal().await;
    assert!(journal
        .get(&format!("reconciled-{TENANT}-seen-1"))
        .await
        .unwrap()
        .is_none());
    assert!(journal
        .get(&format!("reconciled-{TENANT}-running-1"))
        .await
        .unwrap()
        .is_none());

    // The webhook's event for the missed reload arriving late alerts nobody again, and later
    // runs (every second) do not record it twice.
    s.publish(FINAL_TOPIC, &final_failed("missed-1-late", "missed-1"))
        .await;
    let late = s.wait_state("missed-1-late", State::Done).await;
    assert!(
        late.note
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("alerted with event {found}")),
        "{late:?}"
    );
    runs(&s, 2).await;
    let received: Vec<_> = hook.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(received.len(), 2, "{received:?}");
}

/// Only the final outcome is lost: the failed attempt arrived and waits for it (here up to an
/// hour), the reloads API already says FAILED. The next run settles it: one alert, at once,
/// saying what the webhook path missed (before: the journal "knew" the reload, so nothing was
/// alerted until `finalOutcomeWaitSeconds` passed).
#[tokio::test]
async fn a_lost_final_outcome_is_settled_from_the_api_at_the_next_run() {
    let hook = HttpReceiver::start().await;
    let s = setup_with(
        &hook,
        &every_second(1),
        "    alerts:\n      waitForFinalOutcome: always\n      finalOutcomeWaitSeconds: 3600\n",
    )
    .await;
    let mut listener = s.start(true).await;
    s.publish(
        ATTEMPT_TOPIC,
        &attempt("attempt-1", "lost-final-1", json!("error")),
    )
    .await;
    listener
        .wait_for_output("waiting for the reload's final outcome", 1, LIMIT)
        .await;
    s.api.add_reload(listed("lost-final-1", "FAILED"));
    let found = format!("reconciled-{TENANT}-lost-final-1");
    let entry = s.wait_state(&found, State::Done).await;
    assert_eq!(
        entry.note.as_deref(),
        Some("found by reconciliation: its failed attempt arrived (event attempt-1) but its final outcome never did")
    );
    let attempt = s.wait_state("attempt-1", State::Done).await;
    let settled = attempt.note.as_deref().unwrap_or_default();
    assert!(
        settled.contains("carries the alert")
            || settled.contains(&format!("alerted with event {found}")),
        "{attempt:?}"
    );
    runs(&s, 2).await;
    let alerts = alerts_for(&hook, "lost-final-1");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let note = alerts[0]["alert"]["alertNote"].as_str().unwrap();
    assert!(
        note.contains("its failed attempt arrived (event attempt-1)"),
        "{note}"
    );
    // The alert carries the attempt's data (the engine's error), not only the API's.
    assert_eq!(alerts[0]["alert"]["eventId"], found);
}

/// Format drift: an outcome the event does not say clearly (`"ERROR"`, `"Failed"`, a number)
/// is asked of the reloads API, and acted on: alerted when it failed, settled when it did not.
/// Before: recorded without an alert, and reconciliation then skipped the "known" reload.
#[tokio::test]
async fn an_unreadable_outcome_is_asked_of_the_reloads_api() {
    let hook = HttpReceiver::start().await;
    let s = setup_with(&hook, "", common::NO_WAIT).await;
    s.api.add_reload(listed("drift-failed", "FAILED"));
    s.api.add_reload(listed("drift-ok", "SUCCEEDED"));
    let mut listener = s.start(true).await;
    s.publish(
        ATTEMPT_TOPIC,
        &attempt("drift-1", "drift-failed", json!("ERROR")),
    )
    .await;
    s.publish(ATTEMPT_TOPIC, &attempt("drift-2", "drift-ok", json!(3)))
        .await;
    let failed = s.wait_state("drift-1", State::Done).await;
    let ok = s.wait_state("drift-2", State::Done).await;
    assert!(
        ok.note
            .as_deref()
            .unwrap_or_default()
            .contains("the reloads API says SUCCEEDED: no alert"),
        "{ok:?}"
    );
    let alerts = wait::until(LIMIT, "the drifted failure's alert", || async {
        let a = alerts_for(&hook, "drift-failed");
        (!a.is_empty()).then_some(a)
    })
    .await;
    let note = alerts[0]["alert"]["alertNote"].as_str().unwrap();
    assert!(
        note.contains("The event's data.status could not be read (ERROR); Qlik Cloud's reloads API says the reload ended FAILED"),
        "{note}"
    );
    assert_eq!(failed.reload_id.as_deref(), Some("drift-failed"));
    assert!(alerts_for(&hook, "drift-ok").is_empty());
    // The warning names the field.
    let out = listener.output().join("\n");
    assert!(
        out.contains("field=\"data.status\"") || out.contains("field=data.status"),
        "{out}"
    );
    listener.kill().await;
    assert_eq!(hook.delivered().len(), 1);
}

/// Order, paging and lag: 150 failed reloads in no order over two pages, then one that Qlik
/// lists half an hour after it ended (behind every reload the earlier runs saw): each is
/// alerted once. Before: the watermark moved past it, and a page boundary or an older item
/// ended the paging.
#[tokio::test]
async fn every_failure_in_the_window_is_found_whatever_the_order_paging_or_lag() {
    let hook = HttpReceiver::start().await;
    let s = setup(&hook, &every_second(2)).await;
    for i in 0..150 {
        // Ended over the last 100 minutes: the long ones early, behind newer short ones.
        s.api.add_reload(listed_at(
            &format!("paged-{i:03}"),
            "FAILED",
            &ago(100 - i / 2),
        ));
    }
    let _listener = s.start(true).await;
    wait::until(LIMIT, "150 alerts", || async {
        (hook.delivered().len() == 150).then_some(())
    })
    .await;
    // Both pages were read in each run (limit=100, then the next link).
    assert!(
        s.api.calls_to("/api/v1/reloads?limit=100&next=100") >= 1,
        "{:?}",
        s.api
            .calls()
            .iter()
            .map(|c| &c.path_and_query)
            .collect::<Vec<_>>()
    );
    // A reload listed late: it ended 30 minutes ago, after the runs above passed that time.
    runs(&s, 1).await;
    s.api
        .add_reload(listed_at("late-listed", "FAILED", &ago(30)));
    s.wait_state(&format!("reconciled-{TENANT}-late-listed"), State::Done)
        .await;
    runs(&s, 2).await;
    let mut reloads: Vec<String> = hook
        .delivered()
        .iter()
        .map(|r| r.json()["alert"]["reloadId"].as_str().unwrap().to_owned())
        .collect();
    reloads.sort();
    let before = reloads.len();
    reloads.dedup();
    assert_eq!((before, reloads.len()), (151, 151), "each once");
}

/// `graceSeconds`: a failure that ended within the grace is left to the webhook path; one
/// that ended before it is reconciled; one outside the window is not.
#[tokio::test]
async fn the_grace_leaves_recent_failures_to_the_webhook() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      intervalSeconds: 1\n      graceSeconds: 3600\n      lookBackHours: 3\n",
    )
    .await;
    s.api.add_reload(listed_at("recent", "FAILED", &ago(2)));
    s.api
        .add_reload(listed_at("past-grace", "FAILED", &ago(120)));
    s.api.add_reload(listed_at("too-old", "FAILED", &ago(240)));
    let _listener = s.start(true).await;
    s.wait_state(&format!("reconciled-{TENANT}-past-grace"), State::Done)
        .await;
    runs(&s, 3).await;
    let journal = s.journal().await;
    for id in ["recent", "too-old"] {
        let id = format!("reconciled-{TENANT}-{id}");
        assert!(journal.get(&id).await.unwrap().is_none(), "{id}");
    }
    assert_eq!(hook.delivered().len(), 1);
}

/// Two tenants, the same reload id: two reloads, two alerts (before: `reconciled-<reloadId>`
/// was taken by the first tenant, and the second was never alerted).
#[tokio::test]
async fn the_same_reload_id_in_two_tenants_is_two_alerts() {
    const OTHER: &str = "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2Xc";
    let hook = HttpReceiver::start().await;
    let other_api = FakeQlikCloud::start(OTHER, common::TOKEN).await;
    let tenants = alert_block(&hook, "/first")
        + &common::second_tenant(OTHER, &other_api.url(), &hook.url("/second"));
    let reconcile = every_second(1);
    let s = Setup::with(Options {
        tenant: &tenants,
        reconcile: &reconcile,
        ..Options::default()
    })
    .await;
    s.api.add_reload(listed("shared-1", "FAILED"));
    other_api.add_reload(listed("shared-1", "FAILED"));
    let _listener = s.start(true).await;
    s.wait_state(&format!("reconciled-{TENANT}-shared-1"), State::Done)
        .await;
    s.wait_state(&format!("reconciled-{OTHER}-shared-1"), State::Done)
        .await;
    let paths = wait::until(LIMIT, "an alert per tenant", || async {
        let mut p: Vec<String> = hook.delivered().iter().map(|r| r.path.clone()).collect();
        p.sort();
        (p.len() == 2).then_some(p)
    })
    .await;
    assert_eq!(paths, ["/first", "/second"]);
}

/// An event without a reload id cannot be matched with Qlik's record: its alert says so.
#[tokio::test]
async fn an_event_without_a_reload_id_says_it_cannot_be_correlated() {
    let hook = HttpReceiver::start().await;
    let s = setup_with(&hook, "", common::NO_WAIT).await;
    let _listener = s.start(true).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&attempt("no-id-1", "x", json!("error"))).unwrap();
    v["data"].as_object_mut().unwrap().remove("reloadId");
    s.publish(ATTEMPT_TOPIC, &serde_json::to_vec(&v).unwrap())
        .await;
    s.wait_state("no-id-1", State::Done).await;
    let alerts = wait::until(LIMIT, "its alert", || async {
        let a = hook.delivered();
        (!a.is_empty()).then_some(a)
    })
    .await;
    let note = alerts[0].json()["alert"]["alertNote"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("names no reload id, so it cannot be matched"),
        "{note}"
    );
}

/// A next link whose path starts with `//` (here: the tenant's origin, then `//<another
/// host>/api/…`) must not carry the API key to that host (before: the path was joined as a
/// scheme-relative URL and the bearer token went there).
#[tokio::test]
async fn a_next_link_to_another_host_is_refused_and_the_key_stays_home() {
    let hook = HttpReceiver::start().await;
    let evil = HttpReceiver::start().await;
    let s = setup(&hook, &every_second(1)).await;
    let evil_host = evil
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    s.api.set_reloads_next_link(&format!(
        "{}//{evil_host}/api/v1/reloads?next=1",
        s.api.url()
    ));
    s.api.add_reload(listed("first-page", "FAILED"));
    let mut listener = s.start(true).await;
    s.wait_state(&format!("reconciled-{TENANT}-first-page"), State::Done)
        .await;
    runs(&s, 2).await;
    assert!(evil.requests().is_empty(), "{:?}", evil.requests());
    let said = listener
        .output()
        .iter()
        .filter(|l| l.contains("gave a next link that is refused"))
        .count();
    assert!(said >= 1, "{:?}", listener.output());
    listener
        .wait_for_output("could not read Qlik Cloud's whole list", 1, LIMIT)
        .await;
    let once = listener
        .output()
        .iter()
        .filter(|l| l.contains("could not read Qlik Cloud's whole list"))
        .count();
    assert_eq!(once, 1, "said once while it lasts");
}

#[tokio::test]
async fn a_failing_reloads_api_costs_a_warning_not_the_mqtt_path() {
    let hook = HttpReceiver::start().await;
    let s = setup(&hook, &every_second(1)).await;
    s.api.set_reloads_status(Some(500));
    s.api.add_reload(listed("missed-2", "FAILED"));
    let mut listener = s.start(true).await;
    listener
        .wait_for_output("reconciliation with Qlik Cloud failed", 1, LIMIT)
        .await;
    // It keeps failing, once a second: said once, not at every run.
    let runs_before = s.api.calls_to("/api/v1/reloads?");
    wait::until(LIMIT, "three more failed runs", || async {
        (s.api.calls_to("/api/v1/reloads?") >= runs_before + 3).then_some(())
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
    // Once the API answers again, the next run catches up.
    s.api.set_reloads_status(None);
    s.wait_state(&format!("reconciled-{TENANT}-missed-2"), State::Done)
        .await;
    let out = listener.output().join("\n");
    assert!(out.contains("HTTP 500"), "the warning says why: {out}");
    listener
        .wait_for_output("reconciliation with Qlik Cloud works again", 1, LIMIT)
        .await;
    assert_eq!(hook.delivered().len(), 2);
}

/// Qlik's rate limit on the way: the 429's `Retry-After` is waited out (measured from the
/// stand-in's record of when each call arrived), every failure is found, once, and marked in
/// `history` as found by reconciliation, with why.
#[tokio::test]
async fn reconciliation_waits_out_a_429_and_history_says_why() {
    let hook = HttpReceiver::start().await;
    let s = setup(
        &hook,
        "      intervalSeconds: 3600\n      graceSeconds: 0\n      lookBackHours: 1\n",
    )
    .await;
    for i in 0..105 {
        s.api.add_reload(listed(&format!("paged-{i:03}"), "FAILED"));
    }
    // The list's first page is answered 429 with Retry-After: 2.
    s.api
        .inject_on("/api/v1/reloads?", &[relay_tests::fakes::Fault::TooMany(2)]);
    let _listener = s.start(true).await;
    for i in [0, 99, 100, 104] {
        s.wait_state(&format!("reconciled-{TENANT}-paged-{i:03}"), State::Done)
            .await;
    }
    let pages: Vec<_> = s
        .api
        .calls()
        .into_iter()
        .filter(|c| c.path_and_query.starts_with("/api/v1/reloads?"))
        .collect();
    assert_eq!(pages.len(), 3, "the 429, then two pages: {pages:?}");
    assert_eq!(pages[0].status, 429);
    let waited = pages[1].at - pages[0].at;
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "Retry-After honoured: waited {waited:?}"
    );
    assert!(pages[2].path_and_query.contains("next=100"), "{pages:?}");
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
    assert!(
        rows.iter().all(|r| r["note"]
            .as_str()
            .unwrap_or_default()
            .contains("never received over the webhook")),
        "{:?}",
        rows[0]
    );
}
