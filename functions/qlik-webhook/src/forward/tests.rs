use super::*;
use crate::publish::{PublishError, PublishFuture};
use qlik_events::{sign, Secret};
use std::sync::Mutex;

const SECRET: &str = "forward-test-secret-0123456789abcdef";

/// topic, payload, signature, rewritten mark
type Sent = (String, Vec<u8>, Option<String>, Option<String>);

/// Records what would be published; answers with `result`, or an error for topics starting
/// with `fail_prefix`.
struct Recorder {
    sent: Mutex<Vec<Sent>>,
    result: Result<(), PublishError>,
    fail_prefix: Option<&'static str>,
}

impl Publish for Recorder {
    fn publish<'a>(&'a self, m: Message<'a>) -> PublishFuture<'a> {
        self.sent.lock().unwrap().push((
            m.topic.to_owned(),
            m.payload.to_vec(),
            m.signature.map(str::to_owned),
            m.rewritten.map(str::to_owned),
        ));
        let result = match self.fail_prefix {
            Some(prefix) if m.topic.starts_with(prefix) => {
                Err(PublishError::Refused("PUBACK reason NotAuthorized".into()))
            }
            _ => self.result.clone(),
        };
        Box::pin(async move { result })
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
}

fn forwarder(filter: FilterConfig, result: Result<(), PublishError>) -> (Forwarder, Arc<Recorder>) {
    let rec = Arc::new(Recorder {
        sent: Mutex::new(vec![]),
        result,
        fail_prefix: None,
    });
    let f = Forwarder::new(
        Verifier::new(&Secret::new(SECRET), None),
        Filter::new(filter),
        "qscloud".into(),
        rec.clone(),
        4096,
    );
    (f, rec)
}

fn signed(body: &str) -> String {
    sign(&Secret::new(SECRET), body.as_bytes())
}

const EVENT: &str = r#"{"id":"e1","type":"com.qlik.v1.app.reload.finished","tenantid":"t1","time":"2026-11-20T06:14:52Z"}"#;

fn body_json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap()
}

#[tokio::test]
async fn publishes_the_raw_body_with_its_signature() {
    let (f, rec) = forwarder(FilterConfig::default(), Ok(()));
    let sig = format!(" {} ", signed(EVENT).to_uppercase());
    let reply = f.handle(Some(sig.as_bytes()), EVENT.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let b = body_json(&reply);
    assert_eq!(b["status"], "published");
    assert_eq!(b["eventId"], "e1");
    assert_eq!(b["topic"], "qscloud/app/reload/t1");
    let sent = rec.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "qscloud/app/reload/t1");
    assert_eq!(sent[0].1, EVENT.as_bytes());
    assert_eq!(
        sent[0].2.as_deref(),
        Some(signed(EVENT).to_uppercase().as_str())
    );
}

#[tokio::test]
async fn refusals_publish_nothing() {
    let (f, rec) = forwarder(FilterConfig::default(), Ok(()));
    let unsafe_tenant = r#"{"id":"e1","type":"t","tenantid":"a/#"}"#;
    let not_json = "{nope";
    let big = "x".repeat(4097);
    let cases: Vec<(Option<String>, &str, u16, &str)> = vec![
        (None, EVENT, 401, "missing"),
        (Some("zz".into()), EVENT, 401, "not hexadecimal"),
        (Some(signed("other")), EVENT, 401, "does not match"),
        (Some(signed(not_json)), not_json, 400, "not a JSON event"),
        (Some(signed("{}")), "{}", 400, "no event id"),
        (
            Some(signed(unsafe_tenant)),
            unsafe_tenant,
            400,
            "tenant id contains '/'",
        ),
        (Some(signed(&big)), &big, 413, "larger than 4096 bytes"),
    ];
    for (sig, body, status, reason) in cases {
        let reply = f
            .handle(sig.as_deref().map(str::as_bytes), body.as_bytes())
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        let err = body_json(&reply)["error"].as_str().unwrap().to_owned();
        assert!(err.contains(reason), "{err}");
    }
    assert!(rec.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn filters_answer_202_and_publish_nothing() {
    let filter = FilterConfig {
        event_types: Some(vec!["com.qlik.v1.*".into(), "com.qlik.app.created".into()]),
        tenant_ids: Some(vec!["t1".into()]),
        max_age: Some(Duration::from_secs(3600)),
    };
    let (f, rec) = forwarder(filter, Ok(()));
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let cases = [
            (format!(r#"{{"id":"1","type":"com.qlik.user.created","tenantid":"t1","time":"{now}"}}"#), 202, "type com.qlik.user.created is not allowed"),
            (format!(r#"{{"id":"2","type":"com.qlik.v1.reload.finished","tenantid":"t2","time":"{now}"}}"#), 202, "tenant t2 is not allowed"),
            (r#"{"id":"3","type":"com.qlik.app.created","tenantid":"t1","time":"2020-01-01T00:00:00Z"}"#.to_owned(), 202, "more than the 3600s allowed"),
            (r#"{"id":"4","type":"com.qlik.app.created","tenantid":"t1"}"#.to_owned(), 400, "no event time"),
            (r#"{"id":"5","type":"com.qlik.app.created","tenantid":"t1","time":"soon"}"#.to_owned(), 400, "RFC 3339"),
        ];
    for (body, status, reason) in &cases {
        let reply = f
            .handle(Some(signed(body).as_bytes()), body.as_bytes())
            .await;
        assert_eq!(reply.status, *status, "{body}: {}", reply.body);
        assert!(reply.body.contains(reason), "{}", reply.body);
    }
    assert!(rec.sent.lock().unwrap().is_empty());
    // Allowed ones go through, including by prefix.
    for body in [
        format!(
            r#"{{"id":"6","type":"com.qlik.v1.reload.finished","tenantid":"t1","time":"{now}"}}"#
        ),
        format!(r#"{{"id":"7","type":"com.qlik.app.created","tenantid":"t1","time":"{now}"}}"#),
    ] {
        let reply = f
            .handle(Some(signed(&body).as_bytes()), body.as_bytes())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn publish_failure_is_503_never_2xx() {
    for error in [
        PublishError::Unavailable("connection refused".into()),
        PublishError::Timeout(Duration::from_secs(5)),
        PublishError::Refused("PUBACK reason NotAuthorized".into()),
    ] {
        let (f, _) = forwarder(FilterConfig::default(), Err(error.clone()));
        let reply = f
            .handle(Some(signed(EVENT).as_bytes()), EVENT.as_bytes())
            .await;
        assert_eq!(reply.status, 503);
        assert_eq!(body_json(&reply)["error"], error.to_string());
    }
}

#[tokio::test]
async fn previous_secret_still_publishes() {
    let rec = Arc::new(Recorder {
        sent: Mutex::new(vec![]),
        result: Ok(()),
        fail_prefix: None,
    });
    let old = Secret::new("previous-secret-0123456789abcdef0123");
    let f = Forwarder::new(
        Verifier::new(&Secret::new(SECRET), Some(&old)),
        Filter::default(),
        "qscloud".into(),
        rec.clone(),
        4096,
    );
    let reply = f
        .handle(
            Some(sign(&old, EVENT.as_bytes()).as_bytes()),
            EVENT.as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200);
}

const LEGACY: &str = r#"{"eventId":"e2","eventType":"com.qlik.v1.app.reload.finished","extensions":{"tenantId":"t1"}}"#;

fn butler_forwarder(
    output: ButlerOutput,
    fail_prefix: Option<&'static str>,
) -> (Forwarder, Arc<Recorder>) {
    let rec = Arc::new(Recorder {
        sent: Mutex::new(vec![]),
        result: Ok(()),
        fail_prefix,
    });
    let f = Forwarder::new(
        Verifier::new(&Secret::new(SECRET), None),
        Filter::default(),
        "qscloud".into(),
        rec.clone(),
        4096,
    )
    .with_butler_output(output);
    (f, rec)
}

#[tokio::test]
async fn butler_replace_rewrites_cloudevents_unsigned_and_keeps_legacy_signed() {
    let (f, rec) = butler_forwarder(ButlerOutput::Replace, None);
    let reply = f
        .handle(Some(signed(EVENT).as_bytes()), EVENT.as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(body_json(&reply)["butlerTopic"], "qscloud/app/reload/t1");
    let reply = f
        .handle(Some(signed(LEGACY).as_bytes()), LEGACY.as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sent = rec.sent.lock().unwrap();
    assert_eq!(sent.len(), 2, "one message per event");
    let (topic, payload, signature, mark) = &sent[0];
    assert_eq!(topic, "qscloud/app/reload/t1");
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(v["eventType"], "com.qlik.v1.app.reload.finished");
    assert_eq!(v["extensions"]["tenantId"], "t1");
    assert_eq!(signature, &None, "no signature on a body it does not sign");
    assert_eq!(mark.as_deref(), Some("butler-v16"));
    assert_eq!(
        sent[1],
        (
            "qscloud/app/reload/t1".to_owned(),
            LEGACY.as_bytes().to_vec(),
            Some(signed(LEGACY)),
            None
        ),
        "a legacy body goes as it is, with its signature"
    );
}

#[tokio::test]
async fn butler_copy_publishes_both_and_needs_both_acknowledged() {
    let copy = ButlerOutput::Copy {
        topic_prefix: "butler/qscloud".into(),
    };
    let (f, rec) = butler_forwarder(copy.clone(), None);
    let reply = f
        .handle(Some(signed(EVENT).as_bytes()), EVENT.as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        body_json(&reply)["butlerTopic"],
        "butler/qscloud/app/reload/t1"
    );
    {
        let mut sent = rec.sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, "butler/qscloud/app/reload/t1");
        assert_eq!(
            (&sent[0].2, sent[0].3.as_deref()),
            (&None, Some("butler-v16"))
        );
        assert_eq!(
            sent[1],
            (
                "qscloud/app/reload/t1".to_owned(),
                EVENT.as_bytes().to_vec(),
                Some(signed(EVENT)),
                None
            ),
            "the raw body as always"
        );
    }
    // Either copy not acknowledged: 503, so that Qlik resends.
    for failing in ["butler/", "qscloud/"] {
        let (f, _) = butler_forwarder(copy.clone(), Some(failing));
        let reply = f
            .handle(Some(signed(EVENT).as_bytes()), EVENT.as_bytes())
            .await;
        assert_eq!(reply.status, 503, "{failing}: {}", reply.body);
    }
}
