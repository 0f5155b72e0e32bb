//! The listener's HTTP API: Butler's `PUT /v4/mqttpublishmessage` and `GET /v4/butlerping`,
//! its OpenAPI document (`listener/openapi.yaml`, served at `/openapi.yaml`), and the
//! operations endpoints ([`crate::operations`]: health, readiness, metrics) beside them.
//!
//! Promises: listens on loopback unless configured otherwise; HTTPS when
//! `restServerConfig.tls` is enabled; a slow, silent or idle client holds up nobody else and
//! at most `operations::MAX_CONNECTIONS` are held (handshake and header-read timeouts, the oldest idle
//! connection closed for a new one: [`relay_cli::connections`]); the publish endpoint can require
//! a bearer token (compared in constant time) and restrict topics to prefixes; bodies are
//! size-limited; a publish answers 201 only after the broker's PUBACK, 503 when the broker is
//! unavailable or silent (bounded by the publisher's timeout), never hangs;
//! - a request whose `Host` is a name (not an IP address or `localhost`) that is not in
//!   `restServerConfig.allowedHosts` is refused (403), so a web page cannot reach the API
//!   through DNS rebinding;
//! - the publish endpoint refuses topics under the listener's own Qlik Cloud subscription
//!   (`mqttForward.topic.subscriptionRoot`): an API caller cannot forge events into the
//!   pipeline.

use crate::config::RestConfig;
use crate::metrics::{PublishMetric, METRICS};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use http_body_util::{BodyExt, Limited};
use relay_mqtt::{Message, Publish};
use serde_json::json;
use std::sync::Arc;

pub const OPENAPI: &str = include_str!("../../openapi.yaml");

pub struct Api {
    pub config: RestConfig,
    /// Where `PUT /v4/mqttpublishmessage` publishes.
    pub publisher: Arc<dyn Publish>,
    /// `/healthz`, `/readyz`, `/metrics`, served here too.
    pub operations: Arc<crate::operations::Operations>,
    /// The Qlik Cloud events subscription (e.g. `qscloud/#`): not for the publish API.
    pub events_filter: String,
    /// Topics the listener publishes itself (alert channels, status, task results): not for
    /// the publish API either.
    pub own_topics: Vec<String>,
}

pub fn router(api: Arc<Api>) -> axum::Router {
    let mut router = axum::Router::new().route(
        "/openapi.yaml",
        get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }),
    );
    if api.config.publish_enabled {
        router = router.route("/v4/mqttpublishmessage", put(publish));
    }
    if api.config.ping_enabled {
        router = router.route(
            "/v4/butlerping",
            get(|| async {
                Json(json!({
                    "response": "Butler reporting for duty",
                    "butlerVersion": env!("CARGO_PKG_VERSION"),
                    "server": "qlik-listener",
                }))
            }),
        );
    }
    let operations = crate::operations::router(api.operations.clone());
    router
        .with_state(api.clone())
        .merge(operations)
        .layer(axum::middleware::from_fn_with_state(api, check_host))
}

/// Serves the API on `listener` until `shutdown` completes; over TLS with `tls`. Connections
/// are handled as the forwarder's are ([`relay_cli::connections`]): handshake and header-read
/// timeouts, a cap that closes idle connections for new ones.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    api: Arc<Api>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    relay_cli::connections::serve(
        listener,
        tls,
        router(api),
        crate::operations::LIMITS,
        shutdown,
    )
    .await
}

/// Refuses a request for a host name the API does not answer to (DNS rebinding).
async fn check_host(
    State(api): State<Arc<Api>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(host) if !crate::operations::host_allowed(host, &api.config.allowed_hosts) => {
            tracing::warn!(host, path = %request.uri().path(), "API request for another host name; refused");
            error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Host '{host}' is not allowed: add it to Butler.restServerConfig.allowedHosts"
                ),
            )
        }
        _ => next.run(request).await,
    }
}

/// Whether `topic` is one the listener's Qlik Cloud subscription `filter` receives.
pub fn under_subscription(topic: &str, filter: &str) -> bool {
    // A shared subscription (`$share/<group>/<filter>`) receives what its filter matches.
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, f)| f),
        None => filter,
    };
    // MQTT: `#` and `+` do not match topics starting with `$`. (rumqttc's `matches` sliced the
    // first byte and panicked on a topic starting with a non-ASCII character.)
    if topic.starts_with('$') {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if f == "+" || f == level => continue,
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Whether `topic` is one the listener publishes itself (alerts on MQTT channels, Butler's
/// status and task results): an API caller must not be able to fake those.
pub fn own_topic(topic: &str, own: &[String]) -> bool {
    own.iter().any(|t| t == topic)
}

use crate::operations::Json;

fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

#[derive(serde::Deserialize)]
struct PublishBody {
    topic: Option<String>,
    message: Option<String>,
}

async fn publish(State(api): State<Arc<Api>>, request: Request) -> Response {
    let response = publish_checked(&api, request).await;
    let outcome = match response.status().as_u16() {
        201 => PublishMetric::Published,
        503 => PublishMetric::Unavailable,
        401 => PublishMetric::Unauthorized,
        _ => PublishMetric::Refused,
    };
    METRICS.api_publish(outcome);
    response
}

async fn publish_checked(api: &Api, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(token) = &api.config.bearer_token {
        if !bearer_matches(&parts.headers, token) {
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let limit = api.config.max_message_bytes + 4096;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body is larger than {limit} bytes"),
            )
        }
    };
    let (topic, message) = match parse_publish(
        &bytes,
        api.config.allowed_topic_prefixes.as_deref(),
        api.config.max_message_bytes,
    ) {
        Ok(p) => p,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    if under_subscription(&topic, &api.events_filter) {
        tracing::warn!(topic = %topic, "API publish under the Qlik Cloud events subscription; refused");
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "topic is under the listener's Qlik Cloud events subscription ({}): events are only taken from the forwarder",
                api.events_filter
            ),
        );
    }
    if own_topic(&topic, &api.own_topics) {
        tracing::warn!(topic = %topic, "API publish to one of the listener's own output topics; refused");
        return error(
            StatusCode::FORBIDDEN,
            "topic is one the listener publishes itself (alerts, status, task results): not for the API",
        );
    }
    let outgoing = Message::new(&topic, message.as_bytes());
    match api.publisher.publish(outgoing).await {
        Ok(()) => {
            tracing::info!(topic = %topic, bytes = message.len(), "published through the API");
            (
                StatusCode::CREATED,
                Json(json!({ "topic": topic, "message": message })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(topic = %topic, error = %e, "API publish failed");
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// The publish API's body (`{"topic": …, "message": …}`) checked: the topic trimmed and
/// allowed ([`check_topic`]), the message non-empty and at most `max_message_bytes`. Pure, so
/// it can be fuzzed (`fuzz/`).
pub fn parse_publish(
    bytes: &[u8],
    allowed: Option<&[String]>,
    max_message_bytes: usize,
) -> Result<(String, String), String> {
    let parsed: PublishBody = serde_json::from_slice(bytes)
        .map_err(|_| "body must be JSON: {\"topic\": \"…\", \"message\": \"…\"}".to_owned())?;
    let topic = match parsed.topic.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => return Err("topic is required".into()),
    };
    let Some(message) = parsed.message.filter(|m| !m.is_empty()) else {
        return Err("message is required".into());
    };
    check_topic(&topic, allowed)?;
    if message.len() > max_message_bytes {
        return Err(format!(
            "message is {} bytes, more than the {max_message_bytes} allowed",
            message.len()
        ));
    }
    Ok((topic, message))
}

/// A topic we may publish to: no wildcards, no `$` system topics, no NUL, within the allowed
/// prefixes.
pub fn check_topic(topic: &str, allowed: Option<&[String]>) -> Result<(), String> {
    if topic.contains(['+', '#']) {
        return Err("topic must not contain the wildcards + or #".into());
    }
    if topic.starts_with('$') {
        return Err("topics starting with $ are reserved for the broker".into());
    }
    if topic.chars().any(char::is_control) {
        return Err("topic must not contain control characters".into());
    }
    if topic.len() > 1024 {
        return Err("topic is longer than 1024 bytes".into());
    }
    if let Some(prefixes) = allowed {
        if !prefixes.iter().any(|p| topic.starts_with(p.as_str())) {
            return Err(format!(
                "topic must start with one of: {}",
                prefixes.join(", ")
            ));
        }
    }
    Ok(())
}

fn bearer_matches(headers: &HeaderMap, token: &qlik_events::Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time in the token's content (its length is not a secret worth hiding).
    let given = given.trim().as_bytes();
    let expected = token.expose();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::host_allowed;

    #[test]
    fn topics() {
        assert!(check_topic("qliksense/x", None).is_ok());
        for bad in ["a/#", "a/+/b", "$SYS/broker", "a\0b", "a\nb"] {
            assert!(check_topic(bad, None).is_err(), "{bad:?}");
        }
        let allowed = vec!["qliksense/".to_owned(), "butler/".to_owned()];
        assert!(check_topic("butler/x", Some(&allowed)).is_ok());
        assert!(check_topic("other/x", Some(&allowed))
            .unwrap_err()
            .contains("qliksense/, butler/"));
    }

    #[test]
    fn hosts() {
        let allowed = vec!["qlik-relay.corp.example".to_owned()];
        for ok in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8081",
            "localhost:8081",
            "LOCALHOST",
            "qlik-relay.corp.example:8081",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:8081",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[not-an-ip]:80",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn the_events_subscription_is_protected() {
        assert!(under_subscription("qscloud/app/reload/T", "qscloud/#"));
        assert!(under_subscription("qscloud", "qscloud/#"));
        assert!(!under_subscription("qliksense/start_task", "qscloud/#"));
        assert!(under_subscription("a/x/c", "a/+/c"));
        assert!(!under_subscription("a/x/c/d", "a/+/c"));
        assert!(!under_subscription("a/x", "a/+/c"));
        // A shared subscription protects what its filter matches (before: not at all).
        assert!(under_subscription(
            "qscloud/app/reload/T",
            "$share/relay/qscloud/#"
        ));
        assert!(!under_subscription("butler/x", "$share/relay/qscloud/#"));
        // A topic starting with a non-ASCII character (before: a panic in the request).
        assert!(!under_subscription("ü/x", "qscloud/#"));
        assert!(under_subscription("ü/x", "#"));
        assert!(!under_subscription("$SYS/x", "#"));
        assert!(own_topic(
            "qlik-listener/status",
            &["qlik-listener/status".to_owned()]
        ));
        assert!(!own_topic(
            "qlik-listener/status/x",
            &["qlik-listener/status".to_owned()]
        ));
    }

    #[test]
    fn bearer_tokens() {
        let token = qlik_events::Secret::new("t0ken");
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, &token));
        h.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
        assert!(bearer_matches(&h, &token));
        h.insert(header::AUTHORIZATION, "Bearer t0kem".parse().unwrap());
        assert!(!bearer_matches(&h, &token));
        h.insert(header::AUTHORIZATION, "Basic t0ken".parse().unwrap());
        assert!(!bearer_matches(&h, &token));
    }
}
