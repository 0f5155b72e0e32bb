//! The publish API (`PUT /v4/mqttpublishmessage`) against what a hostile caller would try: a
//! forged event under a shared subscription, a topic that used to crash the request, and the
//! listener's own output topics.

mod common;

use common::{Options, Setup, LIMIT};
use relay_tests::mqtt::Subscriber;
use relay_tests::process::Running;

async fn listener_with_api(s: &Setup) -> (Running, String) {
    let config = s.config.to_str().unwrap().to_owned();
    let mut l = Running::spawn(common::BIN, &["--config", &config], &s.env());
    let api = l.wait_for_line("qlik-listener API on ", LIMIT).await;
    l.wait_for_output("subscribed", 1, LIMIT).await;
    (l, api)
}

#[tokio::test]
async fn forged_events_crashing_topics_and_own_topics_are_refused() {
    let s = Setup::with(Options {
        tenant: "          alert:
            mqttNotification:
              reloadAppFailure:
                enable: true
                topic: qlikcloud/alerts/reload-failed
",
        butler: "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n  restServerEndpointsEnable:\n    mqttPublishMessage: true\n",
        ..Options::default()
    })
    .await;
    // The listener shares its subscription with others (how a user spreads load).
    let yaml = std::fs::read_to_string(&s.config).unwrap().replace(
        "subscriptionRoot: qscloud/#",
        "subscriptionRoot: $share/relay/qscloud/#",
    );
    std::fs::write(&s.config, yaml).unwrap();
    let mut sub = Subscriber::connect(s.broker.port, "#").await;
    let (mut listener, api) = listener_with_api(&s).await;
    let client = reqwest::Client::new();
    let put = |topic: &str| {
        client
            .put(format!("{api}/v4/mqttpublishmessage"))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({ "topic": topic, "message": "{\"forged\": true}" }).to_string(),
            )
            .send()
    };
    let tenant = relay_tests::fixtures::TENANT;
    for (topic, status, says) in [
        // Under the shared subscription's filter (before: 201, recorded and alerted).
        (
            format!("qscloud/app/reload/{tenant}"),
            403,
            "events subscription",
        ),
        // The listener's own alert topic (before: 201, a fake alert).
        (
            "qlikcloud/alerts/reload-failed".to_owned(),
            403,
            "publishes itself",
        ),
        // A topic starting with a non-ASCII character: an ordinary topic (before: the request
        // panicked and the connection was dropped without an answer).
        ("ütopic/notice".to_owned(), 201, "ütopic/notice"),
    ] {
        let resp = put(&topic)
            .await
            .unwrap_or_else(|e| panic!("{topic}: no answer: {e}"));
        assert_eq!(resp.status().as_u16(), status, "{topic}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(says), "{topic}: {text}");
    }
    let published: Vec<String> = sub
        .before_marker(s.broker.port, "marker/x")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        published,
        ["ütopic/notice"],
        "only the allowed topic was published"
    );
    let out = listener.output().join("\n");
    assert!(!out.contains("panicked"), "{out}");
    assert!(
        !out.contains("event recorded"),
        "nothing forged was recorded: {out}"
    );
    listener.kill().await;
}
