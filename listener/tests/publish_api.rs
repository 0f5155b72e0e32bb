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

/// Issue #32 item 1: under a default soft limit of 1,024 file descriptors, 1,500 connections
/// to the API that send half a request head and stop. Before: they were held for ever, and the
/// listener had no descriptor left to send its own alerts. Now the API holds at most 256 (the
/// oldest idle ones close for new ones) and closes them after the header-read timeout: a
/// failed reload is still alerted, the API still answers, and every slow connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_api_clients_do_not_starve_the_listeners_alerts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hook = relay_tests::fakes::HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &common::webhook_alert(&hook.url("/alerts")),
        listener: common::NO_WAIT,
        butler:
            "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n",
        ..Options::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut l = Running::spawn(
        "sh",
        &[
            "-c",
            r#"ulimit -n 1024 && exec "$0" --config "$1""#,
            common::BIN,
            &config,
        ],
        &s.env(),
    );
    let api = l.wait_for_line("qlik-listener API on ", LIMIT).await;
    l.wait_for_output("subscribed", 1, LIMIT).await;
    let addr = api.trim().trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..1500 {
        let connect = tokio::net::TcpStream::connect(&addr);
        let mut c = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .expect("accepted within 10 s")
            .unwrap();
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")
            .await;
        slow.push(c);
    }
    // A failed reload is alerted (an outgoing HTTP connection needs a descriptor).
    let (_, body) = common::numbered_failure(0);
    s.publish("qscloud/app/reload", &body).await;
    relay_tests::wait::until(LIMIT, "the alert despite 1,500 slow clients", || {
        let n = hook.delivered().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", api.trim()))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(health.status().as_u16(), 200);
    // Every slow connection is closed by the listener (evicted, or after the timeout).
    let mut reads = tokio::task::JoinSet::new();
    for mut c in slow {
        reads.spawn(async move {
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), c.read(&mut buf));
            matches!(read.await, Ok(Ok(0)) | Ok(Err(_)))
        });
    }
    let open = reads
        .join_all()
        .await
        .iter()
        .filter(|closed| !**closed)
        .count();
    assert_eq!(open, 0, "{open} slow connections still open after 20 s");
    assert!(
        l.output()
            .iter()
            .any(|line| line.contains("too many connections")),
        "the cap was reached and said so"
    );
}
