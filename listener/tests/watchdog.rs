//! The webhook watchdog against a Qlik Cloud stand-in that pages its lists (newest first,
//! default 20 a page), dates deliveries today in a tenant's own offset, and can revoke the API
//! key: a change of the webhook's health is alerted once, with an operator alert each channel
//! can show, and `/readyz` says what is wrong until it is put right.

mod common;

use common::{Options, Setup, LIMIT};
use qlik_listener::journal::State;
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures::{self, FIXTURES, TENANT};
use relay_tests::process::Running;
use relay_tests::wait;
use serde_json::json;

const NAME: &str = "qlik-cloud-mqtt-relay";
const FORWARDER: &str = "https://relay.example.com/webhook";
const BOTH: [&str; 2] = [
    "com.qlik.v1.app.reload.finished",
    "com.qlik.v1.reload.finished",
];

/// Teams, Slack and a webhook, all on `r`.
fn channels(r: &HttpReceiver) -> String {
    format!(
        "          alert:
            teamsNotification:
              reloadAppFailure:
                enable: true
                webhookURL: {teams}
            slackNotification:
              reloadAppFailure:
                enable: true
                webhookURL: {slack}
            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{hook}\"]
                alertEnableByTag: {{ enable: true, tag: critical }}
",
        teams = r.url("/teams"),
        slack = r.url("/slack"),
        hook = r.url("/hook"),
    )
}

struct Watched {
    s: Setup,
    listener: Option<Running>,
    api: String,
}

/// A listener watching `qlik-cloud-mqtt-relay` every second (`extra` under `webhookWatch:`),
/// with its HTTP API for `/readyz`.
async fn watched(r: &HttpReceiver, extra: &str, listener: &str, reconcile: &str) -> Watched {
    let tenant = channels(r);
    let watch = format!("      intervalSeconds: 1\n      expectedUrl: {FORWARDER}\n{extra}");
    let s = Setup::with(Options {
        tenant: &tenant,
        webhook_watch: &watch,
        listener,
        reconcile,
        butler:
            "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n",
        ..Options::default()
    })
    .await;
    Watched {
        s,
        listener: None,
        api: String::new(),
    }
}

impl Watched {
    async fn start(&mut self) {
        let config = self.s.config.to_str().unwrap().to_owned();
        let mut listener = Running::spawn(common::BIN, &["--config", &config], &self.s.env());
        self.api = listener.wait_for_line("qlik-listener API on ", LIMIT).await;
        listener.wait_for_output("subscribed", 1, LIMIT).await;
        self.listener = Some(listener);
    }

    async fn wait_for_output(&mut self, needle: &str) {
        let listener = self.listener.as_mut().expect("started");
        listener.wait_for_output(needle, 1, LIMIT).await;
    }

    async fn ready(&self) -> (u16, String) {
        let r = reqwest::get(format!("{}/readyz", self.api)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits for `n` more completed checks (lists of webhooks answered).
    async fn checks(&self, n: usize) {
        let done = || {
            self.s
                .api
                .calls()
                .iter()
                .filter(|c| c.path_and_query.starts_with("/api/core/webhooks?") && c.status != 0)
                .count()
        };
        let before = done();
        wait::until(LIMIT, &format!("{n} more checks"), || async {
            (done() >= before + n).then_some(())
        })
        .await;
    }

    fn config_arg(&self) -> String {
        self.s.config.to_str().unwrap().to_owned()
    }
}

fn the_webhook(enabled: bool) -> serde_json::Value {
    json!({ "name": NAME, "url": FORWARDER, "enabled": enabled, "eventTypes": BOTH })
}

/// The operator alerts a receiver path got, as JSON.
fn operator_alerts(r: &HttpReceiver, path: &str) -> Vec<serde_json::Value> {
    r.delivered()
        .iter()
        .filter(|q| q.path == path)
        .map(|q| q.json())
        .collect()
}

/// The watched webhook is the oldest of 131 (page 2 of Qlik's newest-first list) and has a
/// namesake calling an old URL: disabling it is alerted once, on Teams, Slack and the webhook
/// with the operator templates, and shown in `/readyz` and `/metrics`; `webhook register` and
/// `webhook enable` find it too. (Before: one page was read, so it was "not found", no alert,
/// and `register` created a second webhook of the name.)
#[tokio::test]
async fn a_webhook_on_page_two_disabled_by_qlik_is_alerted_once_on_every_channel() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    for i in 0..129 {
        w.s.api.add_webhook(json!({ "name": format!("other-{i}"), "url": "https://elsewhere.example.com/", "enabled": true, "eventTypes": BOTH }));
    }
    w.s.api.add_webhook(json!({ "name": NAME, "url": "https://old-forwarder.example.com/", "enabled": false, "eventTypes": BOTH }));
    w.start().await;
    w.checks(2).await;
    assert_eq!(w.ready().await.0, 200, "{}", w.ready().await.1);
    assert!(
        r.delivered().is_empty(),
        "healthy at the first look: nothing to say"
    );
    w.wait_for_output("several webhooks share the watched name")
        .await;

    w.s.api.update_webhook_by_id(
        "wh-1",
        json!({ "enabled": false, "disabledReason": "too many failed deliveries" }),
    );
    let teams = wait::until(LIMIT, "the alert on each channel", || async {
        let t = operator_alerts(&r, "/teams");
        (!t.is_empty()
            && !operator_alerts(&r, "/slack").is_empty()
            && !operator_alerts(&r, "/hook").is_empty())
        .then_some(t)
    })
    .await;
    // Teams: a card whose button opens the tenant's webhooks page.
    let card = &teams[0]["attachments"][0]["content"];
    let text = card.to_string();
    assert!(
        text.contains(
            "Qlik disabled the webhook qlik-cloud-mqtt-relay (too many failed deliveries)"
        ),
        "{text}"
    );
    assert_eq!(
        card["actions"][0]["url"],
        format!("{}/console/webhooks", w.s.api.url())
    );
    assert!(!text.contains("Peak memory"), "{text}");
    // Slack: a working link to the same page.
    let slack = operator_alerts(&r, "/slack")[0].to_string();
    assert!(
        slack.contains(&format!("<{}/console/webhooks|", w.s.api.url())),
        "{slack}"
    );
    // The webhook: our operator document (the tag rule, which is about apps, does not apply).
    let hook = &operator_alerts(&r, "/hook")[0];
    assert_eq!(hook["kind"], "qlik-listener-operator-alert");
    assert_eq!(hook["alert"]["title"], "Qlik Cloud webhook needs attention");
    assert_eq!(
        hook["alert"]["subject"],
        "the webhook qlik-cloud-mqtt-relay"
    );
    let (status, body) = w.ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Qlik disabled the webhook"), "{body}");
    let metrics = reqwest::get(format!("{}/metrics", w.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "qlik_listener_webhook_healthy{{tenant=\"{TENANT}\"}} 0"
        )),
        "{metrics}"
    );
    // Several checks later: still one alert per channel.
    w.checks(3).await;
    assert_eq!(operator_alerts(&r, "/hook").len(), 1);

    // `webhook register` updates the one that calls the forwarder, on page 2.
    let config = w.config_arg();
    let mut env = w.s.env();
    env.push(("QLIK_WEBHOOK_SECRET", fixtures::SECRET.to_owned()));
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &[
            "webhook", "register", "--url", FORWARDER, "--config", &config,
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("updated webhook wh-1"), "{out}");
    assert_eq!(
        w.s.api.webhooks().len(),
        131,
        "no second webhook of the name"
    );
    // The recovery names the webhook.
    let alerts = wait::until(LIMIT, "the recovery alert", || async {
        let a = operator_alerts(&r, "/hook");
        (a.len() >= 2).then_some(a)
    })
    .await;
    assert_eq!(
        alerts[1]["alert"]["title"],
        "Qlik Cloud webhook healthy again"
    );
    assert!(
        alerts[1]["alert"]["what"]
            .as_str()
            .unwrap()
            .contains("The webhook qlik-cloud-mqtt-relay is enabled and delivering again"),
        "{}",
        alerts[1]
    );
    wait::until(LIMIT, "ready again", || async {
        (w.ready().await.0 == 200).then_some(())
    })
    .await;
}

/// A failed delivery dated in the tenant's own offset (`-05:00`: as text it sorts before the
/// last check's UTC time) is a failing webhook (before: compared as text, never counted).
#[tokio::test]
async fn failed_deliveries_are_compared_as_times() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.checks(2).await;
    w.s.api.add_delivery(NAME, "success");
    w.s.api.add_delivery(NAME, "failed");
    let alerts = wait::until(LIMIT, "the failing alert", || async {
        let a = operator_alerts(&r, "/hook");
        (!a.is_empty()).then_some(a)
    })
    .await;
    let what = alerts[0]["alert"]["what"].as_str().unwrap();
    assert!(
        what.contains(
            "1 deliveries of the webhook qlik-cloud-mqtt-relay failed since the last check"
        ),
        "{what}"
    );
}

/// A disabled reason whose text changes is not a new state (before: an alert per wording).
#[tokio::test]
async fn a_changing_reason_is_one_state() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "      minAlertIntervalSeconds: 0\n", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.checks(1).await;
    for reason in [
        "too many failed deliveries",
        "too many failed deliveries (12)",
        "disabled by the system",
    ] {
        w.s.api.update_webhook_by_id(
            "wh-1",
            json!({ "enabled": false, "disabledReason": reason }),
        );
        w.checks(2).await;
    }
    assert_eq!(
        operator_alerts(&r, "/hook").len(),
        1,
        "{:?}",
        operator_alerts(&r, "/hook")
    );
}

/// A webhook that flaps (disabled and enabled at every check) raises at most two alerts per
/// `minAlertIntervalSeconds` (the problem and its end), the later ones saying how often it
/// changed (before: one alert per change, here about ten).
#[tokio::test]
async fn a_flapping_webhook_does_not_storm() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "      minAlertIntervalSeconds: 4\n", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.checks(1).await;
    let started = std::time::Instant::now();
    for i in 0..10 {
        w.s.api
            .update_webhook_by_id("wh-1", json!({ "enabled": i % 2 == 1 }));
        w.checks(1).await;
    }
    // Steady now: what is held back is said once the interval is over.
    w.s.api
        .update_webhook_by_id("wh-1", json!({ "enabled": false }));
    let flapped = wait::until(LIMIT, "a summary of the changes", || async {
        operator_alerts(&r, "/hook").into_iter().find(|a| {
            a["alert"]["what"]
                .as_str()
                .unwrap_or_default()
                .contains("changed state")
        })
    })
    .await;
    let what = flapped["alert"]["what"].as_str().unwrap();
    assert!(what.contains("It changed state"), "{what}");
    let alerts = operator_alerts(&r, "/hook").len();
    let bound = 2 * (started.elapsed().as_secs() as usize / 4 + 1) + 1;
    assert!(
        alerts <= bound,
        "{alerts} alerts in {:?} (at most {bound})",
        started.elapsed()
    );
}

/// The webhook edited to send no reload events is alerted (before: healthy).
#[tokio::test]
async fn a_webhook_without_reload_events_is_alerted() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.checks(1).await;
    w.s.api
        .update_webhook_by_id("wh-1", json!({ "eventTypes": ["com.qlik.v1.app.created"] }));
    let alerts = wait::until(LIMIT, "the alert", || async {
        let a = operator_alerts(&r, "/hook");
        (!a.is_empty()).then_some(a)
    })
    .await;
    let what = alerts[0]["alert"]["what"].as_str().unwrap();
    assert!(
        what.contains("no longer sends reload events (its event types: com.qlik.v1.app.created)"),
        "{what}"
    );
    let (status, body) = w.ready().await;
    assert_eq!(status, 503, "{body}");
}

/// An API key revoked after start: one operator alert, a red `/readyz` naming it, and one
/// alert again when it works (before: `/readyz` stayed green and nobody was told).
#[tokio::test]
async fn a_revoked_api_key_is_alerted_once_and_shown_until_it_works() {
    let r = HttpReceiver::start().await;
    let reconcile = "      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: 1\n";
    let mut w = watched(&r, "", "", reconcile).await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.checks(1).await;
    assert_eq!(w.ready().await.0, 200);
    w.s.api.revoke_token();
    let alerts = wait::until(LIMIT, "the key alert", || async {
        let a = operator_alerts(&r, "/hook");
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(
        alerts[0]["alert"]["title"],
        "Qlik Cloud refuses the listener's API key"
    );
    assert!(alerts[0]["alert"]["link"]
        .as_str()
        .unwrap()
        .ends_with("/console/api-keys"));
    let (status, body) = w.ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused the tenant's API key"), "{body}");
    // The watchdog and reconciliation both keep failing: still one alert.
    w.checks(3).await;
    assert_eq!(operator_alerts(&r, "/hook").len(), 1);
    w.s.api.restore_token();
    let alerts = wait::until(LIMIT, "the all-clear", || async {
        let a = operator_alerts(&r, "/hook");
        (a.len() >= 2).then_some(a)
    })
    .await;
    assert_eq!(
        alerts[1]["alert"]["title"],
        "Qlik Cloud accepts the listener's API key again"
    );
    wait::until(LIMIT, "ready again", || async {
        (w.ready().await.0 == 200).then_some(())
    })
    .await;
    w.checks(2).await;
    assert_eq!(operator_alerts(&r, "/hook").len(), 2);
}

/// A fresh install whose webhook sends final outcomes: the first failed attempt waits for its
/// reload's final outcome, so a reload that succeeds on retry raises no alert (before: `auto`
/// learned only from events seen, and the first attempts alerted at once).
#[tokio::test]
async fn the_webhooks_definition_says_whether_attempts_wait() {
    let r = HttpReceiver::start().await;
    let mut w = watched(&r, "", "", "").await;
    w.s.api.add_webhook(the_webhook(true));
    w.start().await;
    w.wait_for_output("the webhook sends reloads' final outcomes")
        .await;
    let mut attempt: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    attempt["data"]["reloadId"] = json!("retried-1");
    let attempt_id = attempt["id"].as_str().unwrap().to_owned();
    w.s.publish(FIXTURES[0].1, &serde_json::to_vec(&attempt).unwrap())
        .await;
    w.wait_for_output("waiting for the reload's final outcome")
        .await;
    let mut ok: serde_json::Value =
        serde_json::from_slice(&fixtures::event("reload-failed.cloudevents.json")).unwrap();
    ok["id"] = json!("final-ok-1");
    ok["data"]["id"] = json!("retried-1");
    ok["data"]["status"] = json!("SUCCEEDED");
    ok["data"]["succeeded"] = json!(true);
    w.s.publish(FIXTURES[4].1, &serde_json::to_vec(&ok).unwrap())
        .await;
    let settled = w.s.wait_state(&attempt_id, State::Done).await;
    assert!(
        settled
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("succeeded on retry"),
        "{settled:?}"
    );
    assert!(r.delivered().is_empty(), "{:?}", r.delivered());
}
