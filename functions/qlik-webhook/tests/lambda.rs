//! The Lambda path, end to end: the real binary runs against a stand-in for the Lambda Runtime
//! API, receives the documented Function URL and API Gateway events (text and base64 bodies),
//! and publishes to a real Mosquitto.

use relay_tests::fakes::{self, FakeRuntime};
use relay_tests::fixtures::{self, SECRET};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt::Subscriber;
use relay_tests::process::Running;

const BIN: &str = env!("CARGO_BIN_EXE_qlik-webhook");

/// Starts the binary as Lambda would: no arguments, the runtime API in the environment.
fn start_lambda(runtime: &FakeRuntime, broker: &Mosquitto) -> Running {
    let env = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime.api()),
        ("AWS_LAMBDA_FUNCTION_NAME", "qlik-webhook".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/qlik-webhook".to_owned(),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/23/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_REGION", "eu-west-1".to_owned()),
        ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
        ("MQTT_URL", broker.url()),
    ];
    // The runtime prints nothing when ready: invocations simply queue until it asks for them.
    Running::spawn(BIN, &[], &env)
}

#[tokio::test]
async fn function_url_and_api_gateway_events_are_published() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let runtime = FakeRuntime::start().await;
    let lambda = start_lambda(&runtime, &broker);

    for (i, (name, topic)) in fixtures::FIXTURES.iter().enumerate() {
        let body = fixtures::event(name);
        let sig = fixtures::sign(&body);
        let headers = [
            ("Content-Type", "application/json"),
            ("Qlik-Signature", sig.as_str()),
        ];
        // Alternate the payload formats and body encodings.
        let event = match i % 4 {
            0 => fakes::function_url_event("POST", "/", &headers, &body, false),
            1 => fakes::function_url_event("POST", "/", &headers, &body, true),
            2 => fakes::rest_api_event("POST", "/webhook", &headers, &body, false),
            _ => fakes::rest_api_event("POST", "/webhook", &headers, &body, true),
        };
        let response = runtime.invoke(event).await;
        assert_eq!(response["statusCode"], 200, "{name}: {response}");
        let reply: serde_json::Value =
            serde_json::from_str(&fakes::response_body(&response)).unwrap();
        assert_eq!(reply["topic"], *topic);

        let msg = sub.expect().await;
        assert_eq!(msg.topic, *topic);
        assert_eq!(
            msg.payload, body,
            "{name}: byte-identical through the Lambda adapter"
        );
        assert_eq!(msg.property("qlik-signature"), Some(sig.as_str()));
    }

    // Refusals come back as HTTP statuses, and nothing is published.
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let forged = fakes::function_url_event(
        "POST",
        "/",
        &[("qlik-signature", &"a".repeat(64))],
        &body,
        false,
    );
    assert_eq!(runtime.invoke(forged).await["statusCode"], 401);
    let get = fakes::function_url_event("GET", "/", &[], b"", false);
    let response = runtime.invoke(get).await;
    assert_eq!(response["statusCode"], 405);
    let health = fakes::function_url_event("GET", "/healthz", &[], b"", false);
    assert_eq!(runtime.invoke(health).await["statusCode"], 200);
    let good = fakes::function_url_event(
        "POST",
        "/",
        &[("qlik-signature", &fixtures::sign(&body))],
        &body,
        true,
    );
    assert_eq!(runtime.invoke(good).await["statusCode"], 200);
    assert_eq!(
        sub.expect().await.payload,
        body,
        "the refused invocations published nothing"
    );

    // Lambda logs are JSON lines, one per request, without the secret.
    let logs = lambda.output();
    let request_lines: Vec<_> = logs.iter().filter(|l| l.contains("\"event_id\"")).collect();
    assert!(!request_lines.is_empty(), "{logs:?}");
    for line in &request_lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["status"].is_u64(), "{line}");
    }
    assert!(!logs.iter().any(|l| l.contains(SECRET)));
}

#[tokio::test]
async fn a_broker_that_is_down_gives_503_so_qlik_can_resend() {
    let mut broker = Mosquitto::start().await;
    let runtime = FakeRuntime::start().await;
    let _lambda = start_lambda(&runtime, &broker);
    let body = fixtures::event("reload-failed.cloudevents.json");
    let sig = fixtures::sign(&body);
    let event = fakes::function_url_event("POST", "/", &[("qlik-signature", &sig)], &body, false);
    assert_eq!(runtime.invoke(event.clone()).await["statusCode"], 200);
    broker.stop().await;
    assert_eq!(runtime.invoke(event.clone()).await["statusCode"], 503);
    broker.restart().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    assert_eq!(runtime.invoke(event).await["statusCode"], 200);
    assert_eq!(sub.expect().await.payload, body);
}

#[tokio::test]
async fn a_bad_configuration_exits_naming_the_variable() {
    let runtime = FakeRuntime::start().await;
    let env = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime.api()),
        ("AWS_LAMBDA_FUNCTION_NAME", "qlik-webhook".to_owned()),
        ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
    ];
    let (code, output) = relay_tests::process::run(BIN, &[], &env).await;
    assert_ne!(code, Some(0));
    assert!(output.contains("MQTT_URL: no publisher"), "{output}");
}

/// One broker connection for every warm invocation (docs/forwarder.md "Delivery"): five invocations, one
/// connection in the broker's log.
#[tokio::test]
async fn warm_invocations_share_one_broker_connection() {
    let broker = Mosquitto::start_logged().await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let runtime = FakeRuntime::start().await;
    let _lambda = start_lambda(&runtime, &broker);
    for i in 0..5 {
        let body = fixtures::minimal_event(
            &format!("warm-{i}"),
            "com.qlik.v1.app.reload.finished",
            fixtures::TENANT,
        );
        let sig = fixtures::sign(&body);
        let event =
            fakes::function_url_event("POST", "/", &[("qlik-signature", &sig)], &body, false);
        assert_eq!(runtime.invoke(event).await["statusCode"], 200);
        assert_eq!(sub.expect().await.payload, body);
    }
    assert_eq!(broker.connections("qlik-webhook"), 1, "{}", broker.log());
}
