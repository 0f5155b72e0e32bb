//! `mqtts://` against a real Mosquitto TLS listener that requires client certificates: the
//! forwarder verifies the broker against `MQTT_CA_FILE` and authenticates with its own
//! certificate; a wrong CA or a missing client certificate fails with a clear 503.

use relay_tests::fixtures::{self, SECRET};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt::Subscriber;
use relay_tests::process;
use relay_tests::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_qlik-webhook");

#[tokio::test]
async fn mutual_tls_with_verification() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "broker");
    let server = ca.issue("server", &["localhost", "127.0.0.1"]);
    let client = ca.issue("qlik-webhook", &["qlik-webhook"]);
    let stranger_ca = TestCa::new(dir.path(), "stranger");

    let (broker, tls_port) = Mosquitto::start_with_mutual_tls(&ca, &server).await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let base_env = |ca_file: &std::path::Path| {
        vec![
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            ("MQTT_URL", format!("mqtts://localhost:{tls_port}")),
            ("MQTT_CA_FILE", path(ca_file)),
            ("PUBLISH_TIMEOUT_MS", "3000".to_owned()),
        ]
    };
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let post = |base: String| {
        let body = body.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/webhook"))
                .header("qlik-signature", fixtures::sign(&body))
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    // The right CA and a client certificate: published.
    let mut env = base_env(&ca.ca_file);
    env.push(("MQTT_CLIENT_CERT_FILE", path(&client.cert)));
    env.push(("MQTT_CLIENT_KEY_FILE", path(&client.key)));
    let (fwd, base) = process::serve_forwarder(BIN, &env).await;
    let (status, reply) = post(base).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(sub.expect().await.payload, body);
    drop(fwd);

    // A CA that did not sign the broker's certificate: refused, and the reason is given.
    let mut env = base_env(&stranger_ca.ca_file);
    env.push(("MQTT_CLIENT_CERT_FILE", path(&client.cert)));
    env.push(("MQTT_CLIENT_KEY_FILE", path(&client.key)));
    let (fwd, base) = process::serve_forwarder(BIN, &env).await;
    let (status, reply) = post(base).await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply.to_lowercase().contains("certificate"), "{reply}");
    drop(fwd);

    // No client certificate where the broker requires one: refused.
    let (_fwd, base) = process::serve_forwarder(BIN, &base_env(&ca.ca_file)).await;
    let (status, reply) = post(base).await;
    assert_eq!(status, 503, "{reply}");

    let before = sub.before_marker(broker.port, "qscloud/marker").await;
    assert!(before.is_empty(), "nothing else was published: {before:?}");
}

/// The repository's Mosquitto ACL (`infra/mosquitto/acl`) on a TLS listener with passwords:
/// the forwarder's user may publish the events, the listener's user may not.
#[tokio::test]
async fn the_infra_acl_lets_only_the_forwarder_publish_events() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "broker");
    let server = ca.issue("server", &["localhost"]);
    // The plain listener is for the test's own subscriber; the TLS one is set up as in infra/.
    let (broker, tls_port) = Mosquitto::start_like_infra(
        &server,
        &[
            ("qlik-webhook", "forwarder-pa55"),
            ("qlik-listener", "listener-pa55"),
        ],
    )
    .await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let post = |base: String| {
        let body = body.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/webhook"))
                .header("qlik-signature", fixtures::sign(&body))
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let env = |user: &str, password: &str| {
        vec![
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            (
                "MQTT_URL",
                format!("mqtts://{user}:{password}@localhost:{tls_port}"),
            ),
            ("MQTT_CA_FILE", ca.ca_file.to_str().unwrap().to_owned()),
            ("PUBLISH_TIMEOUT_MS", "3000".to_owned()),
        ]
    };

    let (_fwd, base) = process::serve_forwarder(BIN, &env("qlik-webhook", "forwarder-pa55")).await;
    let (status, reply) = post(base).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(sub.expect().await.payload, body);

    // The listener's account may read but not write the events: MQTT 5 says so in the PUBACK.
    let (_fwd, base) = process::serve_forwarder(BIN, &env("qlik-listener", "listener-pa55")).await;
    let (status, reply) = post(base).await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("NotAuthorized"), "{reply}");

    // A wrong password is refused at connection time.
    let (fwd, base) = process::serve_forwarder(BIN, &env("qlik-webhook", "wrong")).await;
    let (status, _) = post(base).await;
    assert_eq!(status, 503);
    let log = fwd.output().join("\n");
    assert!(
        !log.contains("forwarder-pa55") && !log.contains("wrong"),
        "{log}"
    );
    assert!(
        log.contains("the broker refused the credentials: check the user name and password (or client certificate) in MQTT_URL"),
        "the log names the setting to fix: {log}"
    );
    let before = sub.before_marker(broker.port, "qscloud/marker").await;
    assert!(
        before.is_empty(),
        "only the authorised publish arrived: {before:?}"
    );
}
