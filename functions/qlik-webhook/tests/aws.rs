//! The AWS parts: publishing through the IoT data plane (a stand-in that checks the documented
//! `POST /topics/{topic}?qos=1`) and reading the secret from SSM or Secrets Manager (moto_server).

use relay_tests::fakes::FakeIotData;
use relay_tests::fixtures::{self, FIXTURES, SECRET};
use relay_tests::moto::Moto;
use relay_tests::process;

const BIN: &str = env!("CARGO_BIN_EXE_qlik-webhook");

fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "eu-west-1".to_owned()),
        (
            "AWS_ACCESS_KEY_ID",
            relay_tests::fakes::AWS_ACCESS_KEY_ID.to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            relay_tests::fakes::AWS_SECRET_ACCESS_KEY.to_owned(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("PUBLISH_TIMEOUT_MS", "3000".to_owned()),
    ]
}

async fn post(url: &str, secret: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let sig = qlik_events::sign(&qlik_events::Secret::new(secret), body);
    let resp = reqwest::Client::new()
        .post(url)
        .header("qlik-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test]
async fn iot_core_receives_each_fixture_with_qos_1_and_the_signature_property() {
    let iot = FakeIotData::start().await;
    let mut env = aws_env();
    env.push(("QLIK_WEBHOOK_SECRET", SECRET.to_owned()));
    env.push(("AWS_IOT_ENDPOINT_URL", iot.url()));
    let (_fwd, base) = process::serve_forwarder(BIN, &env).await;

    for (name, topic) in FIXTURES {
        let body = fixtures::event(name);
        let (status, reply) = post(&format!("{base}/webhook"), SECRET, &body).await;
        assert_eq!(status, 200, "{name}: {reply}");
        let published = iot.published();
        let last = published.last().expect("a publish");
        assert_eq!(last.topic, *topic);
        assert_eq!(last.query.get("qos").map(String::as_str), Some("1"));
        assert_ne!(last.query.get("retain").map(String::as_str), Some("true"));
        assert_eq!(last.payload, body, "{name}");
        assert!(last.signed, "the SigV4 signature verifies with the key");
        assert_eq!(
            last.user_properties,
            Some(serde_json::json!([{ "qlik-signature": fixtures::sign(&body) }]))
        );
    }
    assert_eq!(iot.published().len(), FIXTURES.len());

    // IoT Core refusing or failing → 503, never 2xx.
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    for status in [403, 500, 503] {
        iot.answer(status);
        let (got, reply) = post(&format!("{base}/webhook"), SECRET, &body).await;
        assert_eq!(got, 503, "IoT Core answered {status}: {reply}");
    }
    assert_eq!(iot.published().len(), FIXTURES.len());
    iot.answer(200);
    let (got, _) = post(&format!("{base}/webhook"), SECRET, &body).await;
    assert_eq!(got, 200);
}

/// The stand-in verifies SigV4 as AWS does: a forwarder signing with the wrong secret key is
/// refused (403), which the webhook sees as 503; nothing is published.
#[tokio::test]
async fn a_wrong_aws_secret_key_is_refused_by_the_signature_check() {
    let iot = FakeIotData::start().await;
    let mut env: Vec<(&str, String)> = aws_env()
        .into_iter()
        .filter(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push(("AWS_SECRET_ACCESS_KEY", "not-the-secret-key".to_owned()));
    env.push(("QLIK_WEBHOOK_SECRET", SECRET.to_owned()));
    env.push(("AWS_IOT_ENDPOINT_URL", iot.url()));
    let (fwd, base) = process::serve_forwarder(BIN, &env).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let (status, reply) = post(&format!("{base}/webhook"), SECRET, &body).await;
    assert_eq!(status, 503, "{reply}");
    assert!(iot.published().is_empty());
    assert!(!fwd.output().join("\n").contains("not-the-secret-key"));
}

#[tokio::test]
async fn the_secret_can_come_from_ssm_or_secrets_manager() {
    let moto = Moto::start().await;
    let iot = FakeIotData::start().await;
    let ssm_secret = "ssm-held-secret-0123456789abcdef012345";
    let sm_secret = "secrets-manager-held-secret-0123456789ab";
    moto.call(
        "AmazonSSM.PutParameter",
        serde_json::json!({"Name": "/qlik/webhook-secret", "Value": ssm_secret, "Type": "SecureString"}),
    )
    .await;
    moto.call(
        "secretsmanager.CreateSecret",
        serde_json::json!({"Name": "qlik/webhook", "SecretString": sm_secret}),
    )
    .await;

    for (var, location, secret) in [
        (
            "QLIK_WEBHOOK_SECRET_SSM_PARAMETER",
            "/qlik/webhook-secret",
            ssm_secret,
        ),
        ("QLIK_WEBHOOK_SECRET_ID", "qlik/webhook", sm_secret),
    ] {
        let mut env = aws_env();
        env.push(("AWS_ENDPOINT_URL", moto.url()));
        env.push((var, location.to_owned()));
        env.push(("AWS_IOT_ENDPOINT_URL", iot.url()));
        let (fwd, base) = process::serve_forwarder(BIN, &env).await;
        let body = fixtures::event("reload-failed.cloudevents.json");
        let (status, reply) = post(&format!("{base}/"), secret, &body).await;
        assert_eq!(status, 200, "{var}: {reply}");
        let (status, _) = post(&format!("{base}/"), SECRET, &body).await;
        assert_eq!(status, 401, "{var}: another secret must not verify");
        assert!(
            !fwd.output().iter().any(|l| l.contains(secret)),
            "secret in logs"
        );
    }

    // During a rotation, the previous secret is read from SSM too: both verify.
    let old_secret = "old-ssm-held-secret-0123456789abcdef01";
    moto.call(
        "AmazonSSM.PutParameter",
        serde_json::json!({"Name": "/qlik/webhook-secret-previous", "Value": old_secret, "Type": "SecureString"}),
    )
    .await;
    let mut env = aws_env();
    env.push(("AWS_ENDPOINT_URL", moto.url()));
    env.push((
        "QLIK_WEBHOOK_SECRET_SSM_PARAMETER",
        "/qlik/webhook-secret".to_owned(),
    ));
    env.push((
        "QLIK_WEBHOOK_SECRET_PREVIOUS_SSM_PARAMETER",
        "/qlik/webhook-secret-previous".to_owned(),
    ));
    env.push(("AWS_IOT_ENDPOINT_URL", iot.url()));
    let (fwd, base) = process::serve_forwarder(BIN, &env).await;
    let body = fixtures::event("reload-failed.cloudevents.json");
    for secret in [ssm_secret, old_secret] {
        let (status, reply) = post(&format!("{base}/"), secret, &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, _) = post(&format!("{base}/"), SECRET, &body).await;
    assert_eq!(status, 401, "a third secret must not verify");
    assert!(
        !fwd.output().iter().any(|l| l.contains(old_secret)),
        "secret in logs"
    );
    drop(fwd);

    // A parameter that does not exist stops the start-up with a clear error.
    let mut env = aws_env();
    env.push(("AWS_ENDPOINT_URL", moto.url()));
    env.push((
        "QLIK_WEBHOOK_SECRET_SSM_PARAMETER",
        "/qlik/missing".to_owned(),
    ));
    env.push(("AWS_IOT_ENDPOINT_URL", iot.url()));
    let (code, output) = process::run(BIN, &["serve", "--listen", "127.0.0.1:0"], &env).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output
            .contains("QLIK_WEBHOOK_SECRET_SSM_PARAMETER: cannot read SSM parameter /qlik/missing"),
        "{output}"
    );
}
