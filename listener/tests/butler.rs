//! Butler's MQTT integration: task starts over MQTT to a stand-in QRS that requires a client
//! certificate, the status topic, and the HTTP API (publish, readiness, metrics).

mod common;

use common::{Options, Setup, LIMIT};
use relay_tests::mqtt::{self, Subscriber};
use relay_tests::qrs::{FakeQrs, NOT_STARTED_TASK};
use relay_tests::tls::TestCa;
use std::time::Duration;

const TASK: &str = "f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const OTHER_TASK: &str = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const API_TOKEN: &str = "api-token-0123456789";

struct Butler {
    s: Setup,
    qrs: FakeQrs,
    _dir: tempfile::TempDir,
}

/// A listener with the Butler integration on the test broker, a QRS stand-in, and the API.
/// `client` picks the client certificate: issued by the QRS's CA, or by a stranger.
async fn butler(trusted_client: bool, allow_list: &str) -> Butler {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "qlik-sense");
    let server = ca.issue("qrs", &["localhost"]);
    let stranger = TestCa::new(dir.path(), "stranger");
    let client = if trusted_client {
        ca.issue("client", &["client"])
    } else {
        stranger.issue("client", &["client"])
    };
    let qrs = FakeQrs::start(&ca, &server).await;
    let butler = format!(
        "  configQRS:
    host: {host}
    port: {port}
    useSSL: true
    headers:
      static:
        - name: X-Qlik-User
          value: UserDirectory=INTERNAL; UserId=sa_repository
  cert:
    clientCert: {cert}
    clientCertKey: {key}
    clientCertCA: {ca}
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: 0
    bearerToken: {API_TOKEN}
    allowedTopicPrefixes: [qliksense/, butler/]
    maxMessageBytes: 1024
  restServerEndpointsEnable:
    mqttPublishMessage: true
",
        host = qrs.host(),
        port = qrs.port(),
        cert = client.cert.display(),
        key = client.key.display(),
        ca = ca.ca_file.display(),
    );
    // The Butler integration uses the same test broker (brokerPort is filled in below).
    let mqtt_config = format!(
        "    enable: true
    brokerHost: 127.0.0.1
    brokerPort: BROKER_PORT
    subscriptionRootTopic: qliksense/#
    taskStartTopic: qliksense/start_task
{allow_list}"
    );
    let s = Setup::with(Options {
        mqtt_config: &mqtt_config,
        butler: &butler,
        ..Options::default()
    })
    .await;
    let yaml = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("BROKER_PORT", &s.broker.port.to_string());
    std::fs::write(&s.config, yaml).unwrap();
    Butler { s, qrs, _dir: dir }
}

async fn start(b: &Butler) -> (relay_tests::process::Running, String) {
    let config = b.s.config.to_str().unwrap().to_owned();
    let mut l =
        relay_tests::process::Running::spawn(common::BIN, &["--config", &config], &b.s.env());
    let api = l.wait_for_line("qlik-listener API on ", LIMIT).await;
    l.wait_for_output("subscribed filter=qliksense/#", 1, LIMIT)
        .await;
    (l, api)
}

fn result(msg: &relay_tests::mqtt::Received) -> serde_json::Value {
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test]
async fn task_starts_by_id_name_and_list_reach_the_qrs_with_xrfkey_and_user() {
    let b = butler(true, "").await;
    let mut results = Subscriber::connect(b.s.broker.port, "qlik-listener/task-result").await;
    let (_l, _api) = start(&b).await;

    mqtt::publish(
        b.s.broker.port,
        "qliksense/start_task",
        TASK.as_bytes(),
        None,
    )
    .await;
    let r = result(&results.expect().await);
    assert_eq!(r["outcome"], "started", "{r}");
    assert_eq!(r["task"], TASK);
    assert!(
        r["executionSessionId"]
            .as_str()
            .is_some_and(|s| s.len() == 36),
        "{r}"
    );
    let calls = b.qrs.calls();
    assert_eq!(calls.len(), 1, "exactly one start");
    assert_eq!(calls[0].path, format!("/qrs/task/{TASK}/start/synchronous"));
    assert_eq!(
        calls[0].headers["x-qlik-user"],
        "UserDirectory=INTERNAL; UserId=sa_repository"
    );

    let by_name = br#"{"taskName": "Reload sales & margin?x=1"}"#;
    mqtt::publish(b.s.broker.port, "qliksense/start_task", by_name, None).await;
    assert_eq!(result(&results.expect().await)["outcome"], "started");
    let call = b.qrs.calls().pop().unwrap();
    assert_eq!(call.path, "/qrs/task/start/synchronous");
    assert_eq!(
        call.query["name"], "Reload sales & margin?x=1",
        "the name cannot inject parameters"
    );

    let many = format!(r#"["{TASK}", "{OTHER_TASK}"]"#);
    mqtt::publish(
        b.s.broker.port,
        "qliksense/start_task",
        many.as_bytes(),
        None,
    )
    .await;
    assert_eq!(result(&results.expect().await)["outcome"], "started");
    let call = b.qrs.calls().pop().unwrap();
    assert_eq!(call.path, "/qrs/task/start/many");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.body).unwrap(),
        serde_json::json!([TASK, OTHER_TASK])
    );

    mqtt::publish(
        b.s.broker.port,
        "qliksense/start_task",
        NOT_STARTED_TASK.as_bytes(),
        None,
    )
    .await;
    assert_eq!(result(&results.expect().await)["outcome"], "not_started");

    // Injection attempts are refused before any QRS call.
    let before = b.qrs.calls().len();
    for bad in [
        "../../qrs/about",
        "f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b?name=x",
        "",
    ] {
        mqtt::publish(
            b.s.broker.port,
            "qliksense/start_task",
            bad.as_bytes(),
            None,
        )
        .await;
        assert_eq!(
            result(&results.expect().await)["outcome"],
            "invalid",
            "{bad:?}"
        );
    }
    assert_eq!(b.qrs.calls().len(), before);
    // Every call carried a fresh xrfkey (checked by the stand-in).
    let keys: std::collections::HashSet<_> = b
        .qrs
        .calls()
        .iter()
        .map(|c| c.query["xrfkey"].clone())
        .collect();
    assert_eq!(keys.len(), b.qrs.calls().len());
}

#[tokio::test]
async fn the_allow_list_refuses_other_tasks() {
    let b = butler(true, &format!("    taskAllowList: [{TASK}]\n")).await;
    let mut results = Subscriber::connect(b.s.broker.port, "qlik-listener/task-result").await;
    let (_l, _api) = start(&b).await;
    mqtt::publish(
        b.s.broker.port,
        "qliksense/start_task",
        OTHER_TASK.as_bytes(),
        None,
    )
    .await;
    let r = result(&results.expect().await);
    assert_eq!(
        (r["outcome"].as_str(), r["task"].as_str()),
        (Some("refused"), Some(OTHER_TASK))
    );
    assert!(b.qrs.calls().is_empty());
    mqtt::publish(
        b.s.broker.port,
        "qliksense/start_task",
        TASK.as_bytes(),
        None,
    )
    .await;
    assert_eq!(result(&results.expect().await)["outcome"], "started");
    assert_eq!(b.qrs.calls().len(), 1);
}

#[tokio::test]
async fn a_wrong_client_certificate_is_reported_and_the_loop_goes_on() {
    let b = butler(false, "").await;
    let mut results = Subscriber::connect(b.s.broker.port, "qlik-listener/task-result").await;
    let (_l, _api) = start(&b).await;
    for _ in 0..2 {
        mqtt::publish(
            b.s.broker.port,
            "qliksense/start_task",
            TASK.as_bytes(),
            None,
        )
        .await;
        let r = result(&results.expect().await);
        assert_eq!(r["outcome"], "failed", "{r}");
        assert!(r["reason"].as_str().unwrap().starts_with("QRS:"), "{r}");
    }
    assert!(b.qrs.calls().is_empty());
    assert!(b.qrs.handshake_failures() >= 1);
}

#[tokio::test]
async fn status_is_online_while_running_and_offline_after_a_kill() {
    let b = butler(true, "").await;
    let (mut l, _api) = start(&b).await;
    // Retained: a subscriber arriving later still learns the status.
    let mut status = Subscriber::connect(b.s.broker.port, "qlik-listener/status").await;
    let online = status.expect().await;
    assert!(online.retain);
    assert_eq!(result(&online)["status"], "online");
    l.kill().await;
    // The broker publishes the last will once it notices the connection is gone.
    let offline = status
        .next(Duration::from_secs(30))
        .await
        .expect("offline status");
    assert_eq!(result(&offline)["status"], "offline");
}

#[tokio::test]
async fn the_publish_api_checks_its_input_and_answers_only_after_the_puback() {
    let mut b = butler(true, "").await;
    let mut sub = Subscriber::connect(b.s.broker.port, "butler/#").await;
    let (_l, api) = start(&b).await;
    let client = reqwest::Client::new();
    let put = |body: serde_json::Value, token: Option<&str>| {
        let mut r = client
            .put(format!("{api}/v4/mqttpublishmessage"))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ok = serde_json::json!({"topic": "butler/notice", "message": "reload done \"ok\""});
    let resp = put(ok.clone(), Some(API_TOKEN)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), ok);
    let msg = sub.expect().await;
    assert_eq!(
        (msg.topic.as_str(), msg.payload.as_slice()),
        ("butler/notice", &b"reload done \"ok\""[..])
    );

    assert_eq!(put(ok.clone(), None).await.unwrap().status().as_u16(), 401);
    assert_eq!(
        put(ok.clone(), Some("wrong"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    for (body, reason) in [
        (serde_json::json!({"message": "x"}), "topic is required"),
        (
            serde_json::json!({"topic": "butler/x", "message": ""}),
            "message is required",
        ),
        (
            serde_json::json!({"topic": "butler/#", "message": "x"}),
            "wildcards",
        ),
        (
            serde_json::json!({"topic": "$SYS/broker", "message": "x"}),
            "reserved",
        ),
        (
            serde_json::json!({"topic": "other/x", "message": "x"}),
            "must start with one of",
        ),
        (
            serde_json::json!({"topic": "butler/x", "message": "x".repeat(1025)}),
            "more than the 1024 allowed",
        ),
    ] {
        let resp = put(body, Some(API_TOKEN)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{reason}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(reason), "{reason}: {text}");
    }
    let before = sub.before_marker(b.s.broker.port, "butler/marker").await;
    assert!(
        before.is_empty(),
        "nothing refused was published: {before:?}"
    );

    // A Qlik Cloud event flows through too, and is counted.
    let event = relay_tests::fixtures::event("app-created.cloudevents.json");
    b.s.publish(relay_tests::fixtures::FIXTURES[5].1, &event)
        .await;
    b.s.wait_state(
        &common::event_id(&event),
        qlik_listener::journal::State::Recorded,
    )
    .await;

    // Ready, with counters that moved.
    let ready = client.get(format!("{api}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qlik_listener_api_publishes_total{outcome=\"published\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qlik_listener_broker_connected{broker=\"butler\"} 1"),
        "{metrics}"
    );
    let openapi = client
        .get(format!("{api}/openapi.yaml"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(openapi.contains("/v4/mqttpublishmessage"));

    // Broker down: 503 within the publish timeout, and not ready.
    b.s.broker.stop().await;
    // (A hung request would fail here: the client gives up after 30 s.)
    let resp = client
        .put(format!("{api}/v4/mqttpublishmessage"))
        .bearer_auth(API_TOKEN)
        .json(&ok)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(resp.status().as_u16(), 503);
    let ready = client.get(format!("{api}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().await.unwrap().contains("not connected"));
}

/// `restServerConfig.tls` serves HTTPS with the given certificate (Butler's keys), a host name
/// as `serverHost` is accepted, `GET /v4/butlerping` answers as Butler does, and a client that
/// connects and says nothing does not hold up the next one.
#[tokio::test]
async fn https_with_butlers_tls_keys_answers_butlerping_and_a_silent_client_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "api");
    let server = ca.issue("api", &["localhost", "127.0.0.1"]);
    let butler = format!(
        "  restServerConfig:
    enable: true
    serverHost: localhost
    serverPort: 0
    backgroundServerPort: 8081
    tls:
      enable: true
      cert: {cert}
      key: {key}
      ca: null
  restServerEndpointsEnable:
    butlerping: true
",
        cert = server.cert.display(),
        key = server.key.display(),
    );
    let s = Setup::with(Options {
        butler: &butler,
        ..Options::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let mut l = relay_tests::process::Running::spawn(common::BIN, &["--config", &config], &s.env());
    let api = l.wait_for_line("qlik-listener API on ", LIMIT).await;
    assert!(api.starts_with("https://127.0.0.1:"), "{api}");
    let port = api.rsplit(':').next().unwrap().to_owned();

    // Someone opens a connection and never says hello.
    let _silent = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();

    let ca_pem = std::fs::read(&ca.ca_file).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/v4/butlerping");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["response"], "Butler reporting for duty");
    assert_eq!(body["butlerVersion"], env!("CARGO_PKG_VERSION"));

    // Plain HTTP on the HTTPS port gets no answer a client would take.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    // A client that does not trust the certificate refuses the server.
    let stranger = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await;
    assert!(stranger.is_err(), "{stranger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_listeners_sharing_a_journal_start_a_task_once() {
    let pg = relay_tests::postgres::Postgres::start().await;
    let b = butler(true, "").await;
    let mut results = Subscriber::connect(b.s.broker.port, "qlik-listener/task-result").await;
    let mut group = Vec::new();
    for id in ["alpha", "bravo", "charlie"] {
        let config = common::instance_config(&b.s.config, id, &pg.url(), "");
        let mut l = relay_tests::process::Running::spawn(
            common::BIN,
            &["--config", config.to_str().unwrap()],
            &b.s.env(),
        );
        l.wait_for_output("subscribed filter=qliksense/#", 1, LIMIT)
            .await;
        group.push(l);
    }
    for (starts, task) in [TASK, OTHER_TASK].into_iter().enumerate() {
        mqtt::publish(
            b.s.broker.port,
            "qliksense/start_task",
            task.as_bytes(),
            None,
        )
        .await;
        // Every instance receives it; one starts it, the others say so.
        let r = result(&results.expect().await);
        assert_eq!(r["outcome"], "started", "{r}");
        relay_tests::wait::until(LIMIT, "the other two to leave it", || {
            let left: usize = group
                .iter()
                .map(|l| {
                    l.output()
                        .iter()
                        .filter(|l| l.contains("task start taken by another listener"))
                        .count()
                })
                .sum();
            async move { (left >= 2 * (starts + 1)).then_some(()) }
        })
        .await;
    }
    let starts: Vec<String> = b.qrs.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        starts,
        [
            format!("/qrs/task/{TASK}/start/synchronous"),
            format!("/qrs/task/{OTHER_TASK}/start/synchronous")
        ],
        "each task started once"
    );
    // The instances that left the starts published no result of their own.
    let more = results
        .before_marker(b.s.broker.port, "qlik-listener/task-result")
        .await;
    assert!(more.is_empty(), "one result per start: {} more", more.len());
}
