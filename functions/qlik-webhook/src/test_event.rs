//! `qlik-webhook send-test-event`: a realistic, freshly signed event posted to a deployed
//! forwarder — the smoke test after deploying.
//!
//! Each event gets a new id and the current time, so de-duplication and `MAX_EVENT_AGE_SECONDS`
//! treat it as new; `data.qlikWebhookTest: true` marks it, so the listener says in the alert
//! that it is a test and does not look up its made-up app in Qlik Cloud.

use qlik_events::Secret;
use serde_json::{json, Value};

/// Which sample to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sample {
    /// `com.qlik.v1.app.reload.finished` with status error.
    ReloadFailed,
    /// `com.qlik.v1.app.reload.finished` with status ok.
    ReloadOk,
    /// `com.qlik.v1.reload.finished` from the reloads service, FAILED.
    ReloadsServiceFailed,
    /// `com.qlik.app.created`.
    AppCreated,
}

/// Which field set to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Cloudevents,
    Legacy,
}

fn random_uuid() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The event body for `sample` in `format`, for `tenant_id`, timestamped `now` (RFC 3339).
pub fn body(sample: Sample, format: Format, tenant_id: &str, now: &str) -> Value {
    let id = random_uuid();
    let app = random_uuid();
    let reload = random_uuid().replace('-', "")[..24].to_owned();
    let (event_type, source, data) = match sample {
        Sample::ReloadFailed | Sample::ReloadOk => {
            let failed = sample == Sample::ReloadFailed;
            (
                "com.qlik.v1.app.reload.finished",
                "com.qlik/engine",
                json!({
                    "name": "qlik-webhook test event", "reloadId": reload, "qlikWebhookTest": true,
                    "status": if failed { "error" } else { "ok" }, "duration": 1234, "endTime": now,
                    "errors": if failed { json!(["Test event from qlik-webhook send-test-event"]) } else { json!([]) },
                    "warnings": [], "statements": [], "peakMemoryBytes": 1048576,
                    "endedWithMemoryConstraint": false, "isPartialReload": false, "isSkipStore": false,
                    "isSessionApp": false, "isDirectQueryMode": false, "rowLimit": 0, "usage": "ANALYTICS",
                    "size": { "memory": 1048576 }
                }),
            )
        }
        Sample::ReloadsServiceFailed => (
            "com.qlik.v1.reload.finished",
            "com.qlik/reloads",
            json!({
                "id": reload, "appId": app, "qlikWebhookTest": true, "succeeded": false, "status": "FAILED", "type": "external",
                "errorCode": "EngineReloadFailed", "errorMessage": "Test event from qlik-webhook send-test-event",
                "creationTime": now, "startTime": now, "durationSeconds": 1
            }),
        ),
        Sample::AppCreated => (
            "com.qlik.app.created",
            "com.qlik/apps",
            json!({ "attributes": { "id": app, "name": "qlik-webhook test app" }, "qlikWebhookTest": true }),
        ),
    };
    match format {
        Format::Cloudevents => json!({
            "specversion": "1.0.2", "id": id, "type": event_type, "source": source, "time": now,
            "datacontenttype": "application/json", "tenantid": tenant_id, "userid": "qlik-webhook-test",
            "toplevelresourceid": app, "data": data
        }),
        Format::Legacy => json!({
            "cloudEventsVersion": "0.1", "eventId": id, "eventTime": now, "eventType": event_type,
            "eventTypeVersion": "1.0.0", "contentType": "application/json", "source": source,
            "extensions": { "tenantId": tenant_id, "userId": "qlik-webhook-test", "topLevelResourceId": app },
            "data": data
        }),
    }
}

/// The tenant id in a listener configuration (Butler's `qlikSenseCloud.event.mqtt.tenant.id`,
/// or the first of `tenants`), so the test event passes the forwarder's tenant filter and the
/// listener's tenant check and goes through to an alert.
pub fn tenant_from_listener_config(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--listener-config: cannot read {}", path.display()))?;
    let yaml: Value = serde_norway::from_str(&text)
        .with_context(|| format!("--listener-config: {} is not YAML", path.display()))?;
    let mqtt = &yaml["Butler"]["qlikSenseCloud"]["event"]["mqtt"];
    let (key, id) = match mqtt["tenant"]["id"].as_str() {
        Some(id) => ("Butler.qlikSenseCloud.event.mqtt.tenant.id", id),
        None => (
            "Butler.qlikSenseCloud.event.mqtt.tenants[0].id",
            mqtt["tenants"][0]["id"].as_str().with_context(|| {
                format!(
                    "--listener-config: {} names no tenant (Butler.qlikSenseCloud.event.mqtt.tenant.id)",
                    path.display()
                )
            })?,
        ),
    };
    let id = id.trim();
    if id.contains('.') || id.starts_with('<') {
        anyhow::bail!(
            "--listener-config: {key} is '{id}', not a tenant id (a host name or a placeholder): pass the tenant id with --tenant-id (qlik-listener check-config shows it)"
        );
    }
    Ok(id.to_owned())
}

/// Whether the listener configured in `path` can take what `config` publishes: a listener with
/// `requireSignature` rejects every rewritten (unsigned) body, so `BUTLER_OUTPUT=replace` in
/// front of it loses every event.
pub fn agrees_with_listener(
    config: &crate::config::Config,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--listener-config: cannot read {}", path.display()))?;
    let yaml: Value = serde_norway::from_str(&text)
        .with_context(|| format!("--listener-config: {} is not YAML", path.display()))?;
    let require =
        &yaml["Butler"]["mqttConfig"]["qlikSenseCloud"]["event"]["mqttForward"]["requireSignature"];
    let requires = require.as_bool() == Some(true) || require.as_str() == Some("true");
    if requires && config.butler == crate::config::ButlerOutput::Replace {
        anyhow::bail!(
            "BUTLER_OUTPUT=replace publishes bodies rewritten for Butler, without Qlik's signature, and the listener in {} has mqttForward.requireSignature: true, so it would reject every event: use BUTLER_OUTPUT=copy (Butler's copies on their own prefix, the signed originals for the listener)",
            path.display()
        );
    }
    Ok(())
}

/// Posts `body`, signed with `secret`, to `url`; returns the status and the answer.
pub async fn send(url: &str, secret: &Secret, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("--url {url:?}: give the forwarder's URL with http:// or https://");
    }
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "Qlik Webhook (qlik-webhook send-test-event)")
        .header("qlik-signature", qlik_events::sign(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_id_comes_from_the_listener_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("butler.yaml");
        let write = |tenant: &str| {
            std::fs::write(
                &file,
                format!("Butler:\n  qlikSenseCloud:\n    event:\n      mqtt:\n{tenant}"),
            )
            .unwrap()
        };
        write("        tenant:\n          id: Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG\n");
        assert_eq!(
            tenant_from_listener_config(&file).unwrap(),
            "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG"
        );
        write("        tenants:\n          - id: first-tenant\n          - id: second\n");
        assert_eq!(tenant_from_listener_config(&file).unwrap(), "first-tenant");
        write("        tenant:\n          id: acme.eu.qlikcloud.com\n");
        let e = tenant_from_listener_config(&file).unwrap_err().to_string();
        assert!(
            e.contains("tenant.id is 'acme.eu.qlikcloud.com', not a tenant id"),
            "{e}"
        );
        assert!(e.contains("--tenant-id"), "{e}");
        let e = tenant_from_listener_config(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listener-config: cannot read"), "{e}");
    }

    #[tokio::test]
    async fn a_url_without_scheme_is_refused_before_sending() {
        let e = send("relay.example.com/webhook", &Secret::new("s"), b"{}")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--url \"relay.example.com/webhook\""), "{e}");
        let e = send("ftp://relay.example.com/", &Secret::new("s"), b"{}")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }

    #[test]
    fn samples_parse_as_the_events_they_claim_to_be() {
        let now = "2026-11-23T10:00:00Z";
        for sample in [
            Sample::ReloadFailed,
            Sample::ReloadOk,
            Sample::ReloadsServiceFailed,
            Sample::AppCreated,
        ] {
            for format in [Format::Cloudevents, Format::Legacy] {
                let body = serde_json::to_vec(&body(sample, format, "tenant-1", now)).unwrap();
                let e = qlik_events::Event::parse(&body).unwrap();
                assert_eq!(e.tenant_id, "tenant-1");
                assert_eq!(e.time.as_deref(), Some(now));
                assert_eq!(e.id.len(), 36);
                let failure = e
                    .reload()
                    .and_then(Result::ok)
                    .is_some_and(|r| r.is_failure());
                assert_eq!(
                    failure,
                    matches!(sample, Sample::ReloadFailed | Sample::ReloadsServiceFailed),
                    "{sample:?}"
                );
            }
        }
        let a = body(Sample::ReloadFailed, Format::Cloudevents, "t", now);
        let b = body(Sample::ReloadFailed, Format::Cloudevents, "t", now);
        assert_ne!(a["id"], b["id"], "a fresh id each time");
    }
}
