//! `qlik-webhook serve` against a real Mosquitto: what a user would check with curl and
//! mosquitto_sub, automated.

use relay_tests::fixtures::{self, FIXTURES, SECRET, TENANT};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt::Subscriber;
use relay_tests::process;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_qlik-webhook");

fn env(broker: &Mosquitto, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
        ("MQTT_URL", broker.url()),
        ("PUBLISH_TIMEOUT_MS", "3000".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

async fn post(url: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "Qlik Webhook")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("Qlik-Signature", sig);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

async fn post_signed(url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let sig = fixtures::sign(&body);
    post(url, Some(&sig), body).await
}

#[tokio::test]
async fn every_fixture_is_published_byte_for_byte_with_its_signature() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let (_fwd, base) = process::serve_forwarder(BIN, &env(&broker, &[])).await;

    for (name, topic) in FIXTURES {
        let body = fixtures::event(name);
        let sig = fixtures::sign(&body);
        let (status, reply) = post(&format!("{base}/webhook"), Some(&sig), body.clone()).await;
        assert_eq!(status, 200, "{name}: {reply}");
        assert_eq!(reply["status"], "published");
        assert_eq!(reply["topic"], *topic);

        let msg = sub.expect().await;
        assert_eq!(msg.topic, *topic, "{name}");
        assert_eq!(msg.payload, body, "{name}: payload must be byte-identical");
        assert_eq!(msg.property("qlik-signature"), Some(sig.as_str()), "{name}");
        assert_eq!(msg.qos, 1);
        assert!(!msg.retain);
    }
}

#[tokio::test]
async fn refused_requests_publish_nothing_and_the_server_carries_on() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (fwd, base) =
        process::serve_forwarder(BIN, &env(&broker, &[("MAX_BODY_BYTES", "65536")])).await;
    let webhook = format!("{base}/webhook");
    let good = fixtures::event("app-reload-failed.cloudevents.json");
    let good_sig = fixtures::sign(&good);
    let mut altered = good.clone();
    altered[40] ^= 0x01;
    let wrong_secret = qlik_events::sign(
        &qlik_events::Secret::new("another-secret-0123456789abcdef01234"),
        &good,
    );
    let unsafe_tenant = fixtures::minimal_event("e1", "com.qlik.v1.app.reload.finished", "a/#");
    let plus_type = fixtures::minimal_event("e2", "com.qlik.+", TENANT);
    let no_id = br#"{"type":"com.qlik.app.created","tenantid":"t"}"#.to_vec();
    let not_json = b"<xml/>".to_vec();
    let huge = vec![b' '; 70_000];

    let cases: Vec<(&str, Option<String>, Vec<u8>, u16)> = vec![
        ("unsigned", None, good.clone(), 401),
        ("forged", Some("0".repeat(64)), good.clone(), 401),
        ("wrong secret", Some(wrong_secret), good.clone(), 401),
        (
            "altered after signing",
            Some(good_sig.clone()),
            altered,
            401,
        ),
        (
            "truncated signature",
            Some(good_sig[..32].to_owned()),
            good.clone(),
            401,
        ),
        (
            "not hex",
            Some("sha256=".to_owned() + &good_sig),
            good.clone(),
            401,
        ),
        ("not JSON", Some(fixtures::sign(&not_json)), not_json, 400),
        ("no event id", Some(fixtures::sign(&no_id)), no_id, 400),
        (
            "tenant a/#",
            Some(fixtures::sign(&unsafe_tenant)),
            unsafe_tenant,
            400,
        ),
        (
            "type with +",
            Some(fixtures::sign(&plus_type)),
            plus_type,
            400,
        ),
        (
            "over MAX_BODY_BYTES",
            Some(fixtures::sign(&huge)),
            huge,
            413,
        ),
    ];
    for (what, sig, body, want) in cases {
        let (status, reply) = post(&webhook, sig.as_deref(), body).await;
        assert_eq!(status, want, "{what}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {reply}"
        );
    }

    let client = reqwest::Client::new();
    let get = client.get(&webhook).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let wrong_path = client
        .post(format!("{base}/hook"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status().as_u16(), 404);
    let twice = client
        .post(&webhook)
        .header("Qlik-Signature", &good_sig)
        .header("Qlik-Signature", &good_sig)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status().as_u16(), 401);
    // A body streamed without Content-Length is cut off at the limit too.
    assert_eq!(post_chunked(&base, &good_sig, 100, 1024).await, 413);

    // The server is still up, and the first message on the broker is the good one.
    let (status, _) = post(&webhook, Some(&good_sig), good.clone()).await;
    assert_eq!(status, 200);
    let first = sub.expect().await;
    assert_eq!(first.payload, good);
    assert!(sub.drain().is_empty());

    // The logs tell what happened without the secret or any signature.
    let logs = fwd.output().join("\n");
    assert!(
        logs.contains("Qlik-Signature does not match the body"),
        "{logs}"
    );
    assert!(logs.contains("tenant id contains '/'"), "{logs}");
    assert!(!logs.contains(SECRET), "secret in logs");
    assert!(!logs.contains(&good_sig), "signature in logs");
}

/// Sends a chunked request by hand (no Content-Length) and returns the response status.
async fn post_chunked(base: &str, signature: &str, chunks: usize, chunk: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nQlik-Signature: {signature}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let data = vec![b'x'; chunk];
    for _ in 0..chunks {
        let frame = [format!("{chunk:x}\r\n").as_bytes(), &data, b"\r\n"].concat();
        // The server may answer and close before all chunks are sent: that is the point.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn broker_down_means_503_and_a_restarted_broker_is_used_again() {
    let mut broker = Mosquitto::start().await;
    let (_fwd, base) = process::serve_forwarder(BIN, &env(&broker, &[])).await;
    let webhook = format!("{base}/webhook");
    let body = |id: &str| fixtures::minimal_event(id, "com.qlik.v1.app.reload.finished", TENANT);

    let (status, _) = post_signed(&webhook, body("before")).await;
    assert_eq!(status, 200);

    broker.stop().await;
    let (status, reply) = post_signed(&webhook, body("while-down")).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("broker"),
        "{reply}"
    );

    broker.restart().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let (status, reply) = post_signed(&webhook, body("after-restart")).await;
    assert_eq!(status, 200, "{reply}");
    let msg = sub.expect().await;
    assert_eq!(msg.payload, body("after-restart"));

    // Restarted under a healthy connection, with no request in between: the next request
    // reconnects transparently (as after a Lambda freeze).
    broker.restart().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let (status, reply) = post_signed(&webhook, body("after-second-restart")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(sub.expect().await.payload, body("after-second-restart"));
}

#[tokio::test]
async fn large_bodies_are_published_with_mqtt_5_and_3_1_1() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    // A 200 KB event: above rumqttc's 10 KiB default packet limit, below our 256 KiB default.
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
    event["data"]["errors"] = serde_json::json!(["e".repeat(200_000)]);
    for version in ["5", "3.1.1"] {
        event["id"] = serde_json::json!(format!("large-{version}"));
        let body = serde_json::to_vec(&event).unwrap();
        let (_fwd, base) =
            process::serve_forwarder(BIN, &env(&broker, &[("MQTT_PROTOCOL_VERSION", version)]))
                .await;
        let (status, reply) = post_signed(&format!("{base}/"), body.clone()).await;
        assert_eq!(status, 200, "MQTT {version}: {reply}");
        let msg = sub.expect().await;
        assert_eq!(msg.payload, body, "MQTT {version}");
        // MQTT 3.1.1 has no user properties.
        assert_eq!(msg.property("qlik-signature").is_some(), version == "5");
    }
}

#[tokio::test]
async fn filtered_events_get_202_and_are_not_published() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_fwd, base) = process::serve_forwarder(
        BIN,
        &env(
            &broker,
            &[
                ("ALLOWED_EVENT_TYPES", "com.qlik.v1.app.reload.finished"),
                ("ALLOWED_TENANT_IDS", TENANT),
            ],
        ),
    )
    .await;
    let webhook = format!("{base}/webhook");
    let other_type = fixtures::event("app-created.cloudevents.json");
    let (status, reply) = post_signed(&webhook, other_type).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["status"], "filtered");
    assert!(reply["reason"]
        .as_str()
        .unwrap()
        .contains("com.qlik.app.created"));
    let other_tenant =
        fixtures::minimal_event("x", "com.qlik.v1.app.reload.finished", "someone-else");
    let (status, reply) = post_signed(&webhook, other_tenant).await;
    assert_eq!(status, 202, "{reply}");

    let allowed = fixtures::event("app-reload-failed.legacy.json");
    let (status, _) = post_signed(&webhook, allowed.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        sub.expect().await.payload,
        allowed,
        "the filtered events must not come first"
    );
}

#[tokio::test]
async fn bad_configuration_stops_before_serving_and_names_the_variable() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("MQTT_URL", "mqtt://127.0.0.1:1".into())],
            "QLIK_WEBHOOK_SECRET: not set",
        ),
        (
            vec![("QLIK_WEBHOOK_SECRET", SECRET.into())],
            "MQTT_URL: no publisher",
        ),
        (
            vec![
                ("QLIK_WEBHOOK_SECRET", SECRET.into()),
                ("MQTT_URL", "mqtts://relay:pa55word@broker:8883/x".into()),
            ],
            "MQTT_URL: a broker URL has no path",
        ),
        (
            vec![
                ("QLIK_WEBHOOK_SECRET", SECRET.into()),
                ("MQTT_URL", "mqtt://127.0.0.1:1".into()),
                (
                    "AWS_IOT_ENDPOINT",
                    "abc-ats.iot.eu-west-1.amazonaws.com".into(),
                ),
            ],
            "not both",
        ),
        (
            vec![
                ("QLIK_WEBHOOK_SECRET", SECRET.into()),
                ("MQTT_URL", "mqtt://127.0.0.1:1".into()),
                ("MAX_BODY_BYTES", "lots".into()),
            ],
            "MAX_BODY_BYTES: 'lots' is not a whole number",
        ),
    ];
    for (env, expected) in cases {
        let (code, output) = process::run(BIN, &["serve", "--listen", "127.0.0.1:0"], &env).await;
        assert_eq!(code, Some(1), "{output}");
        assert!(
            output.contains(expected),
            "expected {expected:?} in:\n{output}"
        );
        assert!(!output.contains("listening"), "{output}");
        assert!(
            !output.contains(SECRET) && !output.contains("pa55word"),
            "secret leaked:\n{output}"
        );
    }
}

#[tokio::test]
async fn help_explains_the_modes() {
    let (code, output) = process::run(BIN, &["--help"], &[]).await;
    assert_eq!(code, Some(0));
    for word in ["serve", "lambda", "sign", "QLIK_WEBHOOK_SECRET", "MQTT_URL"] {
        assert!(
            output.contains(word),
            "{word} missing from --help:\n{output}"
        );
    }
    let (code, output) = process::run(BIN, &[], &[]).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("no command"), "{output}");
}

#[tokio::test]
async fn sign_prints_what_qlik_would_send() {
    let path = fixtures::testdata_dir().join("events/app-reload-failed.cloudevents.json");
    let (code, output) = process::run(
        BIN,
        &["sign", path.to_str().unwrap()],
        &[("QLIK_WEBHOOK_SECRET", SECRET.into())],
    )
    .await;
    assert_eq!(code, Some(0), "{output}");
    // Computed independently: openssl dgst -sha256 -hmac "$SECRET" -hex < the fixture.
    assert_eq!(
        output.trim(),
        "2dca6c6d2f78611b7e0ddc33a1ae08aa5de987098f28de8e7eec4bc21a96d7d0"
    );
    let (code, output) = process::run(BIN, &["sign", "--secret-env", "NOPE"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(output.contains("NOPE is not set"), "{output}");
}

#[tokio::test]
async fn a_body_that_trickles_in_does_not_block_other_requests() {
    let broker = Mosquitto::start().await;
    let (_fwd, base) = process::serve_forwarder(BIN, &env(&broker, &[])).await;
    // Open a request and send its body one byte at a time, slowly, in the background.
    let addr = base.trim_start_matches("http://").to_owned();
    let slow = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head =
            format!("POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..50 {
            if s.write_all(b"{").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (status, _) = post_signed(
        &format!("{base}/webhook"),
        fixtures::event("app-reload-ok.cloudevents.json"),
    )
    .await;
    assert_eq!(status, 200);
    slow.abort();
}

#[tokio::test]
async fn send_test_event_is_the_smoke_test_after_deploying() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let (_fwd, base) = process::serve_forwarder(BIN, &env(&broker, &[])).await;
    let url = format!("{base}/webhook");
    let secret = [("QLIK_WEBHOOK_SECRET", SECRET.to_owned())];
    let (code, out) = process::run(
        BIN,
        &[
            "send-test-event",
            "--url",
            &url,
            "--event",
            "reloads-service-failed",
            "--tenant-id",
            TENANT,
        ],
        &secret,
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("HTTP 200 "), "{out}");
    let msg = sub.expect().await;
    assert_eq!(
        msg.topic,
        format!("qscloud/event/com.qlik.v1.reload.finished/{TENANT}")
    );
    let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(event["data"]["status"], "FAILED");

    let (code, out) = process::run(
        BIN,
        &["send-test-event", "--url", &url, "--format", "legacy"],
        &secret,
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let event: serde_json::Value = serde_json::from_slice(&sub.expect().await.payload).unwrap();
    assert_eq!(event["eventType"], "com.qlik.v1.app.reload.finished");

    // The wrong secret: the forwarder's 401 is reported, and the exit code says so.
    let wrong = [(
        "QLIK_WEBHOOK_SECRET",
        "not-the-secret-0123456789abcdef012345".to_owned(),
    )];
    let (code, out) = process::run(BIN, &["send-test-event", "--url", &url], &wrong).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HTTP 401") && out.contains("does not match"),
        "{out}"
    );
}
