//! The operations endpoints: `/healthz` (the process answers), `/readyz` (it can do its job, or
//! what stops it) and `/metrics` (Prometheus text). Served by Butler's HTTP API when it is on
//! (`butler::rest`), and on their own at `qlikCloudListener.metricsListen`.
//!
//! Promises: `/readyz` answers 200 only when every broker connection is up, the journal takes
//! writes and no tenant has a problem (a refused API key, an unhealthy webhook), else 503 with
//! each problem in a sentence; a request whose `Host` is a name other than `localhost` (or one
//! of the HTTP API's `allowedHosts`) is refused, so a web page cannot read them through DNS
//! rebinding.

use crate::journal::Journal;
use crate::metrics::METRICS;
use crate::subscriber::Connected;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

/// Most connections the API holds at once: well below the 1,024 file descriptors of a default
/// soft limit (the shipped systemd unit sets `LimitNOFILE=65536`), leaving room for the
/// broker, PostgreSQL and the alert channels' HTTPS connections.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request head, or leave a connection idle.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a client may hold of the listener's HTTP surfaces: Butler's API and `metricsListen`.
pub const LIMITS: relay_cli::connections::Limits = relay_cli::connections::Limits {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: HEADER_READ_TIMEOUT,
};

/// What keeps the listener from doing its job, beside its own connections: set by the parts
/// that find it (a refused API key, an unhealthy webhook, events rejected for their signature),
/// shown by `/readyz`. Why process-wide, like [`METRICS`]: the parts that find problems are
/// many and far apart, and `/readyz` reads them all.
pub static PROBLEMS: Problems = Problems {
    map: std::sync::Mutex::new(std::collections::BTreeMap::new()),
};

pub struct Problems {
    map: std::sync::Mutex<std::collections::BTreeMap<String, Problem>>,
}

struct Problem {
    text: String,
    /// Gone by itself after this time (`None`: until cleared).
    until: Option<std::time::Instant>,
}

impl Problems {
    /// `text` (a sentence an operator acts on) under `key` until [`Problems::clear`], or for
    /// `lasts` when given.
    pub fn set(&self, key: &str, text: String, lasts: Option<std::time::Duration>) {
        let until = lasts.map(|d| std::time::Instant::now() + d);
        self.lock().insert(key.to_owned(), Problem { text, until });
    }

    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The problems that hold now, in key order.
    pub fn current(&self) -> Vec<String> {
        let now = std::time::Instant::now();
        let mut map = self.lock();
        map.retain(|_, p| p.until.is_none_or(|u| u > now));
        map.values().map(|p| p.text.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Problem>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A JSON body (`application/json`).
pub struct Json(pub serde_json::Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

/// What readiness and the metrics look at.
pub struct Operations {
    pub journal: Journal,
    /// Broker connections that must be up to be ready: (name, state).
    pub brokers: Vec<(String, Connected)>,
    /// The listeners sharing the journal, as this one sees them.
    pub group: Arc<crate::group::Group>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(ops: Arc<Operations>) -> axum::Router {
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// Serves them on their own on `listener` (no TLS, no API) until the task is stopped.
pub async fn serve(listener: tokio::net::TcpListener, ops: Arc<Operations>) -> std::io::Result<()> {
    let app = router(ops).layer(axum::middleware::from_fn(local_host_only));
    let limits = LIMITS;
    relay_cli::connections::serve(listener, None, app, limits, std::future::pending()).await
}

async fn local_host_only(request: Request, next: axum::middleware::Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(host) if !host_allowed(host, &[]) => {
            tracing::warn!(host, path = %request.uri().path(), "metrics request for another host name; refused");
            (
                StatusCode::FORBIDDEN,
                Json(json!({ "error": format!("Host '{host}' is not allowed") })),
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// Whether a `Host` header value is one the API answers to: an IP address (a rebinding
/// attack needs a name), `localhost`, or a name in `allowed`. The port is not checked.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host.as_str(), |(name, _)| name)
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || allowed.iter().any(|a| a == name)
}

async fn readyz(State(api): State<Arc<Operations>>) -> Response {
    let mut problems = Vec::new();
    for (name, connected) in &api.brokers {
        if !connected.get() {
            problems.push(format!("broker {name} is not connected"));
        }
    }
    if let Some(problem) = api.journal.file_problem() {
        problems.push(problem);
    }
    problems.extend(PROBLEMS.current());
    if let Some(e) = api.journal.record_failure() {
        problems.push(format!(
            "events cannot be recorded ({e}); they are held unacknowledged and retried"
        ));
    }
    if let Err(e) = api.journal.check_writable().await {
        problems.push(format!("journal not writable: {e}"));
    }
    let mut body = if problems.is_empty() {
        json!({ "ready": true })
    } else {
        json!({ "ready": false, "problems": problems })
    };
    if let Some(instance) = api.group.instance() {
        // The group as this instance sees it (a database it cannot reach is a problem above).
        let peers = api.group.peers().await.unwrap_or_default();
        body["instance"] = json!(instance);
        body["holdsRole"] = json!(api.group.holds_role());
        body["instances"] = peers
            .iter()
            .map(|p| json!({ "id": p.id, "seenAt": p.seen_at, "holdsRole": p.holds_role }))
            .collect();
    }
    let status = match problems.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(api): State<Arc<Operations>>) -> Response {
    let brokers: Vec<(&str, bool)> = api
        .brokers
        .iter()
        .map(|(n, c)| (n.as_str(), c.get()))
        .collect();
    let backlog = api.journal.pending_count().await.ok();
    let mut text = METRICS.render(
        &brokers,
        api.journal.record_failure().is_none() && api.journal.file_problem().is_none(),
        backlog,
    );
    if let Some(instance) = api.group.instance() {
        let peers = api.group.peers().await.ok();
        crate::metrics::render_group(
            &mut text,
            instance,
            api.group.holds_role(),
            peers.as_deref(),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
