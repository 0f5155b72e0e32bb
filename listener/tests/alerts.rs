//! Reload-failure alerts to Teams, Slack and an outgoing webhook: HTTP receivers in the test
//! record what arrives, as a user would look at the channel.

mod common;

use common::{event_id, Options, Setup, LIMIT};
use qlik_listener::journal::{DeliveryState, Journal};
use relay_tests::fakes::{Fault, HttpReceiver};
use relay_tests::fixtures::{self, FIXTURES};
use relay_tests::wait;
use std::time::Duration;

const WEBHOOK_SECRET: &str = "outgoing-webhook-secret-0123456789";

struct Channels {
    teams: HttpReceiver,
    slack: HttpReceiver,
    hook: HttpReceiver,
}

impl Channels {
    async fn start() -> Channels {
        Channels {
            teams: HttpReceiver::start().await,
            slack: HttpReceiver::start().await,
            hook: HttpReceiver::start().await,
        }
    }

    /// The tenant's `alert:` section; `extra` is added to every channel.
    fn yaml(&self, extra: &str) -> String {
        let indent = |s: &str| {
            s.lines()
                .map(|l| format!("              {l}\n"))
                .collect::<String>()
        };
        let extra = indent(extra);
        format!(
            "          alert:
            teamsNotification:
              reloadAppFailure:
                enable: true
                webhookURL: {teams}
                headScriptLogLines: 3
                tailScriptLogLines: 4
{extra_t}            slackNotification:
              reloadAppFailure:
                enable: true
                webhookURL: {slack}
                channel: \"#qlik-alerts\"
                fromUser: Qlik Cloud
                iconEmoji: \":rotating_light:\"
                headScriptLogLines: 2
                tailScriptLogLines: 5
{extra_s}            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{hook}\"]
                secret: {WEBHOOK_SECRET}
{extra_w}",
            teams = self.teams.url("/workflows/teams"),
            slack = self.slack.url("/services/T000/B000/XXXX"),
            hook = self.hook.url("/qlik-alerts"),
            extra_t = extra.replace("              ", "                "),
            extra_s = extra.replace("              ", "                "),
            extra_w = extra.replace("              ", "                "),
        )
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.teams.delivered().len(),
            self.slack.delivered().len(),
            self.hook.delivered().len(),
        )
    }
}

async fn setup(channels: &Channels, extra_channel: &str, listener: &str) -> Setup {
    let tenant = channels.yaml(extra_channel);
    Setup::with(Options {
        tenant: &tenant,
        listener,
        ..Options::default()
    })
    .await
}

async fn wait_deliveries(s: &Setup, id: &str, n: usize) -> Vec<qlik_listener::journal::Delivery> {
    let journal: Journal = s.journal().await;
    wait::until(LIMIT, &format!("{n} final deliveries of {id}"), || {
        let journal = journal.clone();
        let id = id.to_owned();
        async move {
            let d = journal.deliveries(&id).await.unwrap();
            (d.len() == n && d.iter().all(|d| d.state.is_final())).then_some(d)
        }
    })
    .await
}

#[tokio::test]
async fn one_failure_gives_one_message_per_channel_with_the_details() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let _listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let deliveries = wait_deliveries(&s, &id, 3).await;
    assert!(
        deliveries.iter().all(|d| d.state == DeliveryState::Sent),
        "{deliveries:?}"
    );
    assert_eq!(ch.counts(), (1, 1, 1));
    // Each went where it was configured, as a POST of JSON.
    for (receiver, path) in [
        (&ch.teams, "/workflows/teams"),
        (&ch.slack, "/services/T000/B000/XXXX"),
        (&ch.hook, "/qlik-alerts"),
    ] {
        let r = &receiver.delivered()[0];
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", path));
        assert!(
            r.headers["content-type"].starts_with("application/json"),
            "{:?}",
            r.headers
        );
    }
    let app = "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f";
    let app_url = format!("{}/sense/app/{app}", s.api.url());

    // Teams: an Adaptive Card for a Power Automate workflow.
    let teams = ch.teams.delivered()[0].json();
    let card = &teams["attachments"][0]["content"];
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    let text = card.to_string();
    assert!(text.contains(&format!("App {app}")), "{text}");
    assert!(
        text.contains("Field \\\"Amount\\\" not found"),
        "error message: {text}"
    );
    assert_eq!(card["actions"][0]["url"], app_url.as_str());
    let head = card["body"][5]["text"].as_str().unwrap();
    let tail = card["body"][7]["text"].as_str().unwrap();
    // Adaptive Card text is Markdown, where a single line break is a space: each script-log
    // line stands on its own only with a blank line between (before: one run-on paragraph).
    let shown_lines = |text: &str| text.split("\n\n").filter(|l| !l.contains('\n')).count();
    assert_eq!(shown_lines(head), 3, "{head:?}");
    assert_eq!(shown_lines(tail), 4, "{tail:?}");
    // The script log's quote, backslash and backtick arrive intact, without CRs.
    assert!(
        tail.contains("Error: Field \"Amount\" not found \\ (see `Orders`)"),
        "{tail}"
    );
    assert!(!tail.contains('\r'));

    // Slack: blocks, with the configured channel, user and icon.
    let slack = ch.slack.delivered()[0].json();
    assert_eq!(slack["channel"], "#qlik-alerts");
    assert_eq!(slack["username"], "Qlik Cloud");
    assert_eq!(slack["icon_emoji"], ":rotating_light:");
    assert!(slack["blocks"][1]["fields"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("<{app_url}|App {app}>")));
    let slack_tail = slack["blocks"][4]["text"]["text"].as_str().unwrap();
    assert_eq!(
        slack_tail.trim_end_matches("```").lines().count(),
        6,
        "title + 5 lines: {slack_tail}"
    );

    // Webhook: a stable document, signed so the receiver can check it came from us.
    let hook = &ch.hook.delivered()[0];
    let doc = hook.json();
    assert_eq!(doc["schemaVersion"], 1);
    assert_eq!(doc["alert"]["eventId"], id.as_str());
    assert_eq!(doc["alert"]["appOwnerEmail"], "ada@example.com");
    let signature = hook
        .headers
        .get("x-qlik-relay-signature")
        .expect("signature header");
    let secret = qlik_events::Secret::new(WEBHOOK_SECRET);
    assert_eq!(signature, &qlik_events::sign(&secret, &hook.body));
    assert_eq!(hook.headers.get("x-qlik-relay-event-id"), Some(&id));

    // The same event again (a redelivery, or Qlik resending it) alerts nobody.
    s.publish(FIXTURES[0].1, &body).await;
    let next = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &next).await;
    wait_deliveries(&s, &event_id(&next), 3).await;
    assert_eq!(
        ch.counts(),
        (2, 2, 2),
        "one more each, for the other event only"
    );
}

#[tokio::test]
async fn tag_gating_and_rate_limits_suppress_visibly() {
    let ch = Channels::start().await;
    // Teams only for apps tagged `critical` (the fake's apps are tagged `alert`); every channel
    // at most one alert per app per 2 seconds.
    let s = setup(&ch, "rateLimit: 2", "").await;
    let yaml = std::fs::read_to_string(&s.config).unwrap().replacen(
        "                headScriptLogLines: 3\n",
        "                headScriptLogLines: 3\n                alertEnableByTag:\n                  enable: true\n                  tag: critical\n",
        1,
    );
    std::fs::write(&s.config, yaml).unwrap();
    let _listener = s.start(true).await;

    let first = fixtures::event("app-reload-failed.legacy-hybrid.json");
    s.publish(FIXTURES[1].1, &first).await;
    let d = wait_deliveries(&s, &event_id(&first), 3).await;
    let teams = d.iter().find(|d| d.channel == "teams").unwrap();
    assert_eq!(teams.state, DeliveryState::Suppressed);
    assert!(teams
        .last_error
        .as_deref()
        .unwrap()
        .contains("tag \"critical\""));
    assert_eq!(ch.counts(), (0, 1, 1));

    // The same app fails again at once: rate-limited on every channel, and recorded as such.
    let second = fixtures::event("app-reload-failed.legacy.json");
    s.publish(FIXTURES[2].1, &second).await;
    let d = wait_deliveries(&s, &event_id(&second), 3).await;
    for d in d.iter().filter(|d| d.channel != "teams") {
        assert_eq!(d.state, DeliveryState::Suppressed, "{d:?}");
        assert!(
            d.last_error.as_deref().unwrap().starts_with("rate limit"),
            "{d:?}"
        );
    }
    assert_eq!(ch.counts(), (0, 1, 1));

    // After the window, the next failure of that app (another reload) is sent.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut third: serde_json::Value = serde_json::from_slice(&first).unwrap();
    third["id"] = serde_json::json!("third-failure");
    third["eventId"] = serde_json::json!("third-failure");
    third["data"]["reloadId"] = serde_json::json!("third-reload");
    s.publish(FIXTURES[1].1, &serde_json::to_vec(&third).unwrap())
        .await;
    wait_deliveries(&s, "third-failure", 3).await;
    assert_eq!(ch.counts(), (0, 2, 2));
}

/// Without `rateLimit`, Butler's channels limit as Butler does: 300 s, Teams per reload, Slack
/// per app; our webhook channel has no limit.
#[tokio::test]
async fn butlers_default_rate_limits_per_reload_for_teams_and_per_app_for_slack() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let _listener = s.start(true).await;
    let first = fixtures::event("app-reload-failed.legacy-hybrid.json");
    s.publish(FIXTURES[1].1, &first).await;
    wait_deliveries(&s, &event_id(&first), 3).await;
    assert_eq!(ch.counts(), (1, 1, 1));

    // The same app fails again in another reload at once.
    let mut second: serde_json::Value = serde_json::from_slice(&first).unwrap();
    second["id"] = serde_json::json!("second-failure");
    second["eventId"] = serde_json::json!("second-failure");
    second["data"]["reloadId"] = serde_json::json!("second-reload");
    s.publish(FIXTURES[1].1, &serde_json::to_vec(&second).unwrap())
        .await;
    let d = wait_deliveries(&s, "second-failure", 3).await;
    let slack = d.iter().find(|d| d.channel == "slack").unwrap();
    assert_eq!(slack.state, DeliveryState::Suppressed, "{slack:?}");
    assert_eq!(
        slack.last_error.as_deref(),
        Some("rate limit (rateLimit): an alert for this app was sent less than 300s ago")
    );
    assert_eq!(
        ch.counts(),
        (2, 1, 2),
        "Teams and the webhook: both reloads"
    );
}

#[tokio::test]
async fn retries_then_success_and_a_dead_channel_does_not_hold_up_the_others() {
    let ch = Channels::start().await;
    let s = setup(
        &ch,
        "",
        "    alerts:\n      giveUpSeconds: 2\n      retryBaseMilliseconds: 50\n",
    )
    .await;
    let _listener = s.start(true).await;
    ch.teams.inject(&[Fault::Status(500), Fault::Status(500)]);
    ch.slack.inject(&[Fault::Status(503); 1000]);
    let body = fixtures::event("reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[4].1, &body).await;

    // The webhook is delivered while Slack is still failing.
    let journal = s.journal().await;
    wait::until(LIMIT, "the webhook delivery", || {
        let journal = journal.clone();
        let id = id.clone();
        async move {
            let d = journal.delivery(&id, "webhook-1").await.unwrap()?;
            (d.state == DeliveryState::Sent).then_some(())
        }
    })
    .await;
    let slack_now = journal.delivery(&id, "slack").await.unwrap().unwrap();
    assert!(
        !slack_now.state.is_final(),
        "Slack is still being retried: {slack_now:?}"
    );

    let d = wait_deliveries(&s, &id, 3).await;
    let by = |c: &str| d.iter().find(|d| d.channel == c).unwrap().clone();
    assert_eq!(by("teams").state, DeliveryState::Sent);
    assert_eq!(by("teams").attempts, 3, "500, 500, then 200");
    assert_eq!(ch.teams.delivered().len(), 1);
    assert_eq!(by("slack").state, DeliveryState::Failed);
    assert_eq!(by("slack").last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(by("webhook-1").state, DeliveryState::Sent);
    assert!(ch.slack.delivered().is_empty());
}

#[tokio::test]
async fn a_listener_killed_between_channels_sends_only_what_is_missing() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let mut listener = s.start(true).await;
    // Slack hangs; Teams and the webhook go through.
    ch.slack.inject(&[Fault::Delay(Duration::from_secs(30))]);
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let journal = s.journal().await;
    wait::until(LIMIT, "Teams and webhook sent, Slack under way", || {
        let journal = journal.clone();
        let id = id.clone();
        async move {
            let d = journal.deliveries(&id).await.unwrap();
            let state = |c: &str| d.iter().find(|d| d.channel == c).map(|d| d.state);
            (state("teams") == Some(DeliveryState::Sent)
                && state("webhook-1") == Some(DeliveryState::Sent)
                && state("slack") == Some(DeliveryState::Sending))
            .then_some(())
        }
    })
    .await;
    listener.kill().await;
    ch.slack.clear_faults();

    let _listener = s.start(false).await;
    let d = wait_deliveries(&s, &id, 3).await;
    assert!(d.iter().all(|d| d.state == DeliveryState::Sent), "{d:?}");
    assert_eq!(ch.teams.delivered().len(), 1, "Teams is not sent again");
    assert_eq!(
        ch.hook.delivered().len(),
        1,
        "the webhook is not sent again"
    );
    // Slack's answered request is the retry after the restart (the hung one never answered).
    assert_eq!(ch.slack.delivered().len(), 1);
}

#[tokio::test]
async fn the_mqtt_channel_publishes_the_alert_document() {
    let mqtt_alert = "          alert:
            mqttNotification:
              reloadAppFailure:
                enable: true
                topic: qlikcloud/alerts/reload-failed
";
    let s = Setup::with(Options {
        tenant: mqtt_alert,
        ..Options::default()
    })
    .await;
    let mut sub = relay_tests::mqtt::Subscriber::connect(s.broker.port, "qlikcloud/alerts/#").await;
    let _listener = s.start(true).await;
    let body = fixtures::event("reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[4].1, &body).await;
    let msg = sub.expect().await;
    assert_eq!(msg.topic, "qlikcloud/alerts/reload-failed");
    assert_eq!(msg.qos, 1);
    let doc: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(doc["kind"], "qlik-cloud-reload-failed");
    assert_eq!(doc["alert"]["eventId"], id.as_str());
    assert_eq!(doc["alert"]["errorMessage"], "Field \"Amount\" not found");
    let d = wait_deliveries(&s, &id, 1).await;
    assert_eq!(
        (d[0].channel.as_str(), d[0].state),
        ("mqtt", DeliveryState::Sent)
    );
}

#[tokio::test]
async fn e_mail_goes_to_the_recipients_and_the_app_owner_once_each() {
    let sink = relay_tests::smtp::SmtpSink::start().await;
    let email_alert = "          alert:
            emailNotification:
              reloadAppFailure:
                enable: true
                fromAddress: Qlik Cloud <qlik@example.com>
                recipients: [ops@example.com, OPS@example.com]
                subject: \"Reload failed: {{appName}} ({{reloadTrigger}})\"
                priority: high
                headScriptLogLines: 2
                tailScriptLogLines: 3
                appOwnerAlert:
                  enable: true
                  includeOwner:
                    includeAll: true
";
    let smtp = format!(
        "  emailNotification:\n    smtp:\n      host: 127.0.0.1\n      port: {}\n      secure: false\n      tls:\n        ignoreTLS: true\n",
        sink.addr.port()
    );
    let s = Setup::with(Options {
        tenant: email_alert,
        ..Options::default()
    })
    .await;
    // Butler keeps SMTP settings at Butler.emailNotification.smtp.
    let yaml = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("  scriptLog:\n", &format!("{smtp}  scriptLog:\n"));
    std::fs::write(&s.config, yaml).unwrap();
    let _listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let d = wait_deliveries(&s, &id, 2).await;
    let channels: Vec<&str> = d.iter().map(|d| d.channel.as_str()).collect();
    assert_eq!(channels, ["email:ada@example.com", "email:ops@example.com"]);
    assert!(d.iter().all(|d| d.state == DeliveryState::Sent), "{d:?}");

    let mails = sink.mails();
    assert_eq!(mails.len(), 2);
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["ada@example.com", "ops@example.com"]);
    let app = "4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f";
    for mail in &mails {
        assert_eq!(mail.from, "qlik@example.com");
        assert_eq!(
            mail.header("subject").as_deref(),
            Some(format!("Reload failed: App {app} (chronos)").as_str())
        );
        assert_eq!(mail.header("x-priority").as_deref(), Some("1 (Highest)"));
        let html = mail.body();
        assert!(html.contains(&format!("App {app}")), "{html}");
        assert!(
            html.contains("Field &quot;Amount&quot; not found"),
            "HTML-escaped error: {html}"
        );
        assert!(
            html.contains(&format!("href=\"{}/sense/app/{app}\"", s.api.url())),
            "{html}"
        );
        assert!(html.contains("0008 Execution Failed"), "tail lines: {html}");
    }
}

#[tokio::test]
async fn all_five_channels_alert_once_and_a_redelivery_alerts_nobody() {
    let ch = Channels::start().await;
    let sink = relay_tests::smtp::SmtpSink::start().await;
    let tenant = ch.yaml("")
        + "            emailNotification:
              reloadAppFailure:
                enable: true
                fromAddress: qlik@example.com
                recipients: [ops@example.com]
            mqttNotification:
              reloadAppFailure:
                enable: true
";
    let s = Setup::with(Options {
        tenant: &tenant,
        ..Options::default()
    })
    .await;
    let smtp = format!(
        "  emailNotification:\n    smtp:\n      host: 127.0.0.1\n      port: {}\n      tls:\n        ignoreTLS: true\n",
        sink.addr.port()
    );
    let yaml = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("  scriptLog:\n", &format!("{smtp}  scriptLog:\n"));
    std::fs::write(&s.config, yaml).unwrap();
    let mut mqtt_alerts =
        relay_tests::mqtt::Subscriber::connect(s.broker.port, "qlikcloud/alerts/#").await;
    let _listener = s.start(true).await;

    let body = fixtures::event("app-reload-failed.legacy-hybrid.json");
    let id = event_id(&body);
    s.publish(FIXTURES[1].1, &body).await;
    let d = wait_deliveries(&s, &id, 5).await;
    assert!(d.iter().all(|d| d.state == DeliveryState::Sent), "{d:?}");
    let all = |ch: &Channels, sink: &relay_tests::smtp::SmtpSink| (ch.counts(), sink.mails().len());
    assert_eq!(all(&ch, &sink), ((1, 1, 1), 1));
    let first = mqtt_alerts.expect().await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&first.payload).unwrap()["alert"]["eventId"],
        id.as_str()
    );
    assert!(
        // The reload's error as the Qlik Cloud API (the stand-in) reports it.
        sink.mails()[0]
            .body()
            .contains("Field &quot;Amount&quot; not found"),
        "the error message is in the mail"
    );

    // The broker delivers the same event again, as after a reconnect: nobody is alerted.
    s.publish(FIXTURES[1].1, &body).await;
    let next = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &next).await;
    wait_deliveries(&s, &event_id(&next), 5).await;
    assert_eq!(
        all(&ch, &sink),
        ((2, 2, 2), 2),
        "one more each: the other event's"
    );
    let second = mqtt_alerts.expect().await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&second.payload).unwrap()["alert"]["eventId"],
        event_id(&next).as_str()
    );
    let before = mqtt_alerts
        .before_marker(s.broker.port, "qlikcloud/alerts/marker")
        .await;
    assert!(before.is_empty(), "no third alert: {before:?}");
}

#[tokio::test]
async fn console_and_file_channels_show_and_keep_each_alert_once() {
    let local = "          alert:
            consoleNotification:
              reloadAppFailure:
                enable: true
                tailScriptLogLines: 2
            fileNotification:
              reloadAppFailure:
                enable: true
                path: alerts.jsonl
";
    let s = Setup::with(Options {
        tenant: local,
        ..Options::default()
    })
    .await;
    let mut listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.legacy.json");
    let id = event_id(&body);
    s.publish(FIXTURES[2].1, &body).await;
    let d = wait_deliveries(&s, &id, 2).await;
    assert!(d.iter().all(|d| d.state == DeliveryState::Sent), "{d:?}");

    listener
        .wait_for_output("ALERT: Qlik Cloud reload failed", 1, LIMIT)
        .await;
    let out = listener.output();
    let error = out
        .iter()
        .find(|l| l.trim_start().starts_with("error:"))
        .expect("the console alert names the error");
    assert!(error.contains("Field \"Amount\" not found"), "{error}");
    assert!(out.iter().any(|l| l.contains("Execution finished.")));
    assert!(out.iter().any(|l| l.contains(&format!("event {id}"))));

    let docs = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(s.dir.path().join("alerts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(docs().len(), 1);
    assert_eq!(docs()[0]["kind"], "qlik-cloud-reload-failed");
    assert_eq!(docs()[0]["alert"]["eventId"], id.as_str());

    // A redelivery alerts nobody: once the next event is alerted, each channel has two.
    s.publish(FIXTURES[2].1, &body).await;
    let next = fixtures::event("reload-failed.cloudevents.json");
    s.publish(FIXTURES[4].1, &next).await;
    wait_deliveries(&s, &event_id(&next), 2).await;
    let alerts = |out: Vec<String>| out.iter().filter(|l| l.contains("ALERT: Qlik")).count();
    assert_eq!(alerts(listener.output()), 2);
    let ids: Vec<_> = docs()
        .iter()
        .map(|d| d["alert"]["eventId"].clone())
        .collect();
    assert_eq!(ids, [id.as_str(), event_id(&next).as_str()]);
}

/// Issue #18, way (b): Butler and this listener on one broker, the forwarder with
/// `BUTLER_OUTPUT=copy` and the listener with `requireSignature`. The listener alerts once per
/// event; a copy rewritten for Butler that reaches it by mistake (here: from a forwarder set to
/// `replace`) is ignored with a warning, and does not claim the event id, so the signed original
/// arriving after it is still alerted. (Before the fix the copy was recorded as rejected and the
/// original was dropped as a duplicate.)
#[tokio::test]
async fn a_butler_copy_is_never_rejected_in_place_of_the_signed_event() {
    let ch = Channels::start().await;
    let tenant = ch.yaml("");
    let s = Setup::with(Options {
        tenant: &tenant,
        forward: "          requireSignature: true\n",
        ..Options::default()
    })
    .await;
    let mut listener = s.start(true).await;
    let bin = relay_tests::process::workspace_bin("qlik-webhook");
    let forwarder = |mode: &str| {
        let env = vec![
            ("QLIK_WEBHOOK_SECRET", fixtures::SECRET.to_owned()),
            ("MQTT_URL", s.broker.url()),
            ("BUTLER_OUTPUT", mode.to_owned()),
        ];
        let bin = bin.to_str().unwrap().to_owned();
        async move { relay_tests::process::serve_forwarder(&bin, &env).await }
    };
    let post = |base: String, body: Vec<u8>| async move {
        let status = reqwest::Client::new()
            .post(format!("{base}/webhook"))
            .header("Qlik-Signature", fixtures::sign(&body))
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    };

    // As documented: the listener sees the signed original only, and alerts once.
    let (_copy, copy_base) = forwarder("copy").await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);
    post(copy_base.clone(), body).await;
    let deliveries = wait_deliveries(&s, &id, 3).await;
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Sent));
    assert_eq!(ch.counts(), (1, 1, 1));

    // Misrouted: the rewritten copy first, on the listener's own topic.
    let (_replace, replace_base) = forwarder("replace").await;
    let (id, body) = common::numbered_failure(2);
    post(replace_base, body.clone()).await;
    listener
        .wait_for_output("a copy the forwarder rewrote for Butler", 1, LIMIT)
        .await;
    assert!(
        s.journal().await.get(&id).await.unwrap().is_none(),
        "not recorded"
    );
    post(copy_base, body).await;
    let deliveries = wait_deliveries(&s, &id, 3).await;
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Sent));
    assert_eq!(ch.counts(), (2, 2, 2), "one alert per event and channel");
    assert_eq!(
        s.journal().await.get(&id).await.unwrap().unwrap().state,
        qlik_listener::journal::State::Done
    );
}

/// Issue #17 item 8: an app named with Slack and Teams markup (as any app owner can name one)
/// reaches the channels as text: no `@channel` mention, no link to another site, while the
/// built-in templates' own links still work. (Before: the name went into Slack's mrkdwn and
/// the Adaptive Card's Markdown as markup.)
#[tokio::test]
async fn an_app_name_with_markup_arrives_as_text() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let name = "<!channel> urgent: <https://evil.example/login|re-enter your password> [here](https://evil.example/login)";
    s.api.set_app_name(name);
    let _listener = s.start(true).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    wait_deliveries(&s, &event_id(&body), 3).await;

    let slack = String::from_utf8(ch.slack.delivered()[0].body.clone()).unwrap();
    assert!(!slack.contains("<!channel>"), "{slack}");
    assert!(!slack.contains("<https://evil.example"), "{slack}");
    assert!(slack.contains(
        "&lt;!channel&gt; urgent: &lt;https://evil.example/login|re-enter your password&gt;"
    ));
    let app_link = format!("<{}/sense/app/", s.api.url());
    assert!(
        slack.contains(&app_link),
        "the template's own link: {slack}"
    );

    let teams = ch.teams.delivered()[0].json().to_string();
    assert!(
        !teams.contains("[here](https://evil.example/login)"),
        "{teams}"
    );
    assert!(
        teams.contains("[here]\u{200B}(https://evil.example/login)"),
        "{teams}"
    );
    // The webhook channel carries data, not markup: the name as it is.
    let hook = ch.hook.delivered()[0].json();
    assert_eq!(hook["alert"]["appName"], name);
}

/// `preview`: what each channel would send, for a sample failure, without sending; with
/// `--channel` and `--send`, one channel for real.
#[tokio::test]
async fn preview_shows_each_channel_and_sends_only_on_request() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) =
        relay_tests::process::run(common::BIN, &["preview", "--config", &config], &s.env()).await;
    assert_eq!(code, Some(0), "{out}");
    for header in [
        "== teams (teams)",
        "== slack (slack)",
        "== webhook-1 (webhook)",
    ] {
        assert!(out.contains(header), "{header}: {out}");
    }
    assert!(out.contains("Sales forecast – EMEA (sample)"), "{out}");
    assert!(
        out.contains("\"username\": \"Qlik Cloud\""),
        "Slack's options: {out}"
    );
    assert_eq!(ch.counts(), (0, 0, 0), "nothing sent without --send");

    let (code, out) = relay_tests::process::run(
        common::BIN,
        &[
            "preview",
            "--channel",
            "slack",
            "--send",
            "--config",
            &config,
        ],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("== teams"), "{out}");
    assert!(out.contains("sent on slack: sent"), "{out}");
    assert_eq!(ch.counts(), (0, 1, 0));
    let sent = ch.slack.delivered()[0].json();
    assert!(
        sent["text"].as_str().unwrap().contains("(sample)"),
        "{sent}"
    );

    let (code, out) = relay_tests::process::run(
        common::BIN,
        &["preview", "--channel", "nope", "--config", &config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no enabled alert channel named nope"), "{out}");
}

/// An alert that was given up on is found with `history --alert-state failed` (with the app's
/// name), and `history resend` sends it again once the channel works, recording it on the
/// event. Issue #33 item 14: the flag says it is about alerts (not `--status failed`, which is
/// about reloads), and `resend` takes the start of an id.
#[tokio::test]
async fn a_failed_alert_is_listed_and_resent_by_hand() {
    let ch = Channels::start().await;
    let s = setup(
        &ch,
        "",
        "    alerts:\n      giveUpSeconds: 1\n      retryBaseMilliseconds: 50\n",
    )
    .await;
    let _listener = s.start(true).await;
    ch.slack.set_down(true);
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let id = event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let d = wait_deliveries(&s, &id, 3).await;
    let slack = d.iter().find(|d| d.channel == "slack").unwrap();
    assert_eq!(slack.state, DeliveryState::Failed, "{slack:?}");

    let config = s.config.to_str().unwrap().to_owned();
    let run = |args: Vec<&str>| {
        let mut all = vec!["history", "--config", &config];
        all.extend(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let env = s.env();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            relay_tests::process::run(common::BIN, &all, &env).await
        }
    };
    // Newer events without an alert do not hide it: the filter applies before --limit.
    for n in 0..3 {
        let mut newer: serde_json::Value =
            serde_json::from_slice(&fixtures::event(FIXTURES[5].0)).unwrap();
        let newer_id = format!("ffffffff-0000-4000-8000-00000000000{n}");
        newer["id"] = newer_id.clone().into();
        s.publish(FIXTURES[5].1, &serde_json::to_vec(&newer).unwrap())
            .await;
        let journal = s.journal().await;
        wait::until(LIMIT, "the newer event to be recorded", || {
            let (journal, newer_id) = (journal.clone(), newer_id.clone());
            async move { journal.get(&newer_id).await.unwrap().map(|_| ()) }
        })
        .await;
    }
    let (code, out) = run(vec!["--alert-state", "failed", "--limit", "1"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 event(s)"), "{out}");
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("slack:failed"), "{out}");
    assert!(
        out.contains(
            "App 4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f (4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f)"
        ),
        "the app's name: {out}"
    );
    // The old name still works, for scripts.
    let (_, out) = run(vec!["--alerts", "sent", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows[0]["appName"],
        "App 4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f"
    );

    // Still down: the resend fails, says so, and the event records the try.
    let (code, out) = run(vec![
        "resend",
        &id,
        "--channel",
        "slack",
        "--give-up-seconds",
        "1",
    ])
    .await;
    assert_eq!(code, Some(1), "{out}");
    let journal = s.journal().await;
    let after = journal.delivery(&id, "slack").await.unwrap().unwrap();
    assert_eq!(after.state, DeliveryState::Failed);
    assert!(after.attempts > slack.attempts, "{after:?}");

    ch.slack.set_down(false);
    let before = ch.slack.delivered().len();
    let (code, out) = run(vec!["resend", "0000", "--channel", "slack"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no event 0000 in"), "{out}");
    let (code, out) = run(vec!["resend", &id[..8], "--channel", "slack"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("slack: sent"), "{out}");
    assert_eq!(ch.slack.delivered().len(), before + 1);
    let resent = journal.delivery(&id, "slack").await.unwrap().unwrap();
    assert_eq!(resent.state, DeliveryState::Sent);
    assert!(
        resent
            .last_error
            .as_deref()
            .unwrap()
            .contains("(was failed)"),
        "{resent:?}"
    );
    // Sent now: resending it again would send it twice, so it needs --force.
    let (code, out) = run(vec!["resend", &id, "--channel", "slack"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "the alert on slack was sent already: resending would send it twice; add --force"
        ),
        "{out}"
    );
    assert_eq!(ch.slack.delivered().len(), before + 1, "nothing sent");
    let (code, out) = run(vec!["resend", &id, "--channel", "slack", "--force"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(ch.slack.delivered().len(), before + 2);
    // Teams was sent once and stays so; a wrong channel is named.
    assert_eq!(ch.teams.delivered().len(), 1);
    let (code, out) = run(vec!["resend", &id, "--channel", "sms"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--channel sms: not an enabled channel"),
        "{out}"
    );
}

/// `preview --event ID --send` of another tenant's event sends on that tenant's channels, and
/// `--tenant` naming the other tenant is refused (before: the first tenant's channels got it).
#[tokio::test]
async fn preview_send_uses_the_events_own_tenant() {
    const OTHER: &str = "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2Xc";
    let hook = relay_tests::fakes::HttpReceiver::start().await;
    let other_api = relay_tests::fakes::FakeQlikCloud::start(OTHER, common::TOKEN).await;
    let tenants = common::webhook_alert(&hook.url("/first"))
        + &common::second_tenant(OTHER, &other_api.url(), &hook.url("/second"));
    let s = Setup::with(Options {
        tenant: &tenants,
        listener: common::NO_WAIT,
        ..Options::default()
    })
    .await;
    let _listener = s.start(true).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["tenantid"] = serde_json::json!(OTHER);
    let body = serde_json::to_vec(&v).unwrap();
    let id = event_id(&body);
    s.publish(&format!("qscloud/app/reload/{OTHER}"), &body)
        .await;
    s.wait_state(&id, qlik_listener::journal::State::Done).await;
    assert_eq!(hook.delivered().len(), 1);
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &["preview", "--event", &id, "--send", "--config", &config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let paths: Vec<String> = hook.delivered().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/second", "/second"],
        "both on the event's own tenant's channel"
    );
    let (code, out) = relay_tests::process::run(
        common::BIN,
        &[
            "preview",
            "--event",
            &id,
            "--tenant",
            relay_tests::fixtures::TENANT,
            "--send",
            "--config",
            &config,
        ],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("the event is tenant {OTHER}'s, not --tenant")),
        "{out}"
    );
    assert_eq!(hook.delivered().len(), 2, "nothing sent");
}

/// `data.reloadId` given as a number is read as text, and the failure alerted with it (issue
/// #32 item 12: it was recorded as pending and never alerted).
#[tokio::test]
async fn a_numeric_reload_id_is_alerted() {
    let hook = relay_tests::fakes::HttpReceiver::start().await;
    let tenant = common::webhook_alert(&hook.url("/alerts"));
    let s = Setup::with(Options {
        tenant: &tenant,
        listener: common::NO_WAIT,
        ..Options::default()
    })
    .await;
    let _listener = s.start(true).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    v["data"]["reloadId"] = serde_json::json!(4242);
    let body = serde_json::to_vec(&v).unwrap();
    let id = event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let entry = s.wait_state(&id, qlik_listener::journal::State::Done).await;
    assert_eq!(entry.reload_id.as_deref(), Some("4242"));
    let alerts = wait::until(LIMIT, "the alert", || async {
        let a = hook.delivered();
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(alerts[0].json()["alert"]["reloadId"], "4242");
}

/// Issue #33 item 3: a broken `templateFile` was found only by `preview`, and a misspelt
/// variable rendered empty without a word. `check-config` compiles each template (an error
/// naming the key) and warns about each variable the alert data does not have.
#[tokio::test]
async fn check_config_compiles_templates_and_names_unknown_variables() {
    let tenant = "          alert:
            teamsNotification:
              reloadAppFailure:
                enable: true
                webhookURL: https://example.invalid/teams
                templateFile: teams.handlebars
            slackNotification:
              reloadAppFailure:
                enable: true
                webhookURL: https://example.invalid/slack
                messageType: basic
                basicMsgTemplate: 'Failed: {{appName}} {{errorMesage}}'
";
    let s = Setup::with(Options {
        tenant,
        ..Options::default()
    })
    .await;
    let template = s.dir.path().join("teams.handlebars");
    let config = s.config.to_str().unwrap().to_owned();
    let env = s.env();
    let args = ["check-config", "--config", &config];
    let check = || relay_tests::process::run(common::BIN, &args, &env);

    std::fs::write(
        &template,
        r#"{"text": "{{appName}}: {{executionStartTime.startTimeLokal1}}"}"#,
    )
    .unwrap();
    let (code, out) = check().await;
    assert_eq!(code, Some(0), "{out}");
    let at = "Butler.qlikSenseCloud.event.mqtt.tenant.alert";
    for said in [
        format!("warning: {at}.teamsNotification.reloadAppFailure.templateFile: {{{{executionStartTime.startTimeLokal1}}}} is not a variable of the alert data"),
        format!("warning: {at}.slackNotification.reloadAppFailure.basicMsgTemplate: {{{{errorMesage}}}} is not a variable of the alert data"),
    ] {
        assert!(out.contains(&said), "{said}\n{out}");
    }
    assert!(
        !out.contains("{{appName}}"),
        "known variables are not listed: {out}"
    );

    std::fs::write(&template, r#"{"text": "{{#if appName}}never closed"}"#).unwrap();
    let (code, out) = check().await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "{at}.teamsNotification.reloadAppFailure.templateFile: the template does not compile"
        )),
        "{out}"
    );
}

/// Issue #33 item 8: `send-test-event` through the forwarder gave three "lookup failed … 404"
/// warnings and an alert with an empty owner that looked like a real failure. Now the alert
/// says it is a test, and the listener does not ask Qlik Cloud about the made-up app.
#[tokio::test]
async fn a_test_event_alerts_as_a_test_without_lookups() {
    let ch = Channels::start().await;
    let s = setup(&ch, "", "").await;
    let mut listener = s.start(true).await;
    let bin = relay_tests::process::workspace_bin("qlik-webhook");
    let bin = bin.to_str().unwrap().to_owned();
    let env = vec![
        ("QLIK_WEBHOOK_SECRET", fixtures::SECRET.to_owned()),
        ("MQTT_URL", s.broker.url()),
    ];
    let (_forwarder, base) = relay_tests::process::serve_forwarder(&bin, &env).await;
    let config = s.config.to_str().unwrap().to_owned();
    let url = format!("{base}/webhook");
    let args = [
        "send-test-event",
        "--url",
        &url,
        "--listener-config",
        &config,
    ];
    let (code, out) = relay_tests::process::run(&bin, &args, &env).await;
    assert_eq!(code, Some(0), "{out}");

    wait::until(LIMIT, "the three alerts", || {
        let n = ch.counts();
        async move { (n == (1, 1, 1)).then_some(()) }
    })
    .await;
    let alert = ch.hook.delivered()[0].json();
    let data = &alert["alert"];
    assert!(
        data["alertTitle"].as_str().unwrap().starts_with("TEST: "),
        "{alert}"
    );
    assert!(
        data["alertNote"]
            .as_str()
            .unwrap()
            .contains("test event from qlik-webhook send-test-event"),
        "{alert}"
    );
    assert_eq!(data["appOwnerName"], "(a test event: no app, no owner)");
    let teams = ch.teams.delivered()[0].json().to_string();
    assert!(teams.contains("TEST: "), "{teams}");
    // No lookups of the made-up app and reload, so no warnings about them.
    assert_eq!(s.api.calls_to("/api/v1/apps"), 0);
    assert_eq!(s.api.calls_to("/api/v1/reloads"), 0);
    listener
        .wait_for_output("a test event (qlik-webhook send-test-event)", 1, LIMIT)
        .await;
    assert!(
        !listener.output().join("\n").contains("lookup failed"),
        "{:?}",
        listener.output()
    );
}
