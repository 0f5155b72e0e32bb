//! The Qlik Cloud REST API as the listener uses it (design.md §5), behaving as its documentation
//! says it does, the inconvenient parts included:
//! - lists come in pages (`limit` defaults: 10 reloads, 20 webhooks or deliveries; at most 100)
//!   with an absolute `links.next.href` on the origin the caller used;
//! - the reloads list promises no order: a reload is stored at a random place in it, so a
//!   long reload that failed early may stand behind many newer ones;
//! - webhooks and deliveries come newest first; delivery times are today's, written as Qlik
//!   varies them (fractions of a second or not, `Z` or a tenant's offset);
//! - a revoked API key is answered 401 from then on ([`FakeQlikCloud::revoke_token`]);
//! - 429 with `Retry-After`, 5xx, delays and redirects can be injected, and every call is
//!   recorded with the time it arrived.
//!
//! Any app is named `App <id>`, owned by Ada Lovelace, tagged `alert`, and its reloads failed
//! with the script log of `testdata/events/script-log.txt`.

use crate::fakes::{percent_decode, serve, Fault};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub path_and_query: String,
    pub authorization: Option<String>,
    /// The status the stand-in answered (0 while the call is still being answered).
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// Random faults on every call (after the queued ones): the share of calls answered 500, and
/// of calls answered 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorRates {
    pub status_500: f64,
    pub too_many: f64,
    pub retry_after_secs: u64,
}

/// The owner every fake app has.
pub const OWNER_ID: &str = "65a1f0c2e4b0d1a2b3c4d5e6";

/// What the stand-in holds, shared by its handle and its server.
struct Shared {
    tenant_id: String,
    /// The API key it accepts (changed by `revoke_token`).
    token: Mutex<String>,
    calls: Mutex<Vec<ApiCall>>,
    faults: Mutex<std::collections::VecDeque<Fault>>,
    /// Faults for calls whose path starts with a prefix, before the others.
    path_faults: Mutex<Vec<(String, Fault)>>,
    error_rates: Mutex<ErrorRates>,
    script_log: Mutex<Arc<String>>,
    /// `/api/core/webhooks`: the stored webhooks (oldest first), secrets included.
    webhooks: Mutex<Vec<serde_json::Value>>,
    /// Each webhook's deliveries, oldest first.
    deliveries: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    next_delivery: AtomicU64,
    /// Delivery ids resent through `…/actions/resend`.
    resent: Mutex<Vec<String>>,
    /// Every app's name (default: `App <id>`).
    app_name: Mutex<Option<String>>,
    /// `GET /api/v1/reloads`: the tenant's reload history, in no particular order.
    reloads: Mutex<Vec<serde_json::Value>>,
    /// When set, `GET /api/v1/reloads` answers this status.
    reloads_status: Mutex<Option<u16>>,
    /// When set, the first page of the reloads list gives this as its next link.
    reloads_next: Mutex<Option<String>>,
}

pub struct FakeQlikCloud {
    pub addr: SocketAddr,
    pub tenant_id: String,
    pub token: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeQlikCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// RFC 3339 as Qlik varies it: UTC with milliseconds and `Z`, or whole seconds in a US
/// tenant's offset (`-05:00`), which as text sorts before the same moment in UTC.
fn qlik_time(t: time::OffsetDateTime, style: u64) -> String {
    let (t, offset) = match style % 2 {
        0 => (t, None),
        _ => (t - time::Duration::hours(5), Some("-05:00")),
    };
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
    match offset {
        None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z"),
        Some(o) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{o}"),
    }
}

/// The deliveries a new webhook has had: three, an hour or more ago (two failed).
fn past_deliveries(counter: &AtomicU64) -> Vec<serde_json::Value> {
    let now = time::OffsetDateTime::now_utc();
    [("failed", 90), ("success", 80), ("failed", 70)]
        .iter()
        .map(|(status, minutes_ago)| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            delivery(
                n,
                status,
                qlik_time(now - time::Duration::minutes(*minutes_ago), n),
            )
        })
        .collect()
}

fn delivery(n: u64, status: &str, triggered_at: String) -> serde_json::Value {
    serde_json::json!({
        "id": format!("d-{n}"), "status": status, "triggeredAt": triggered_at,
        "statusMessage": if status == "failed" { "503 Service Unavailable" } else { "200 OK" },
        "eventType": "com.qlik.v1.app.reload.finished",
    })
}

impl FakeQlikCloud {
    pub async fn start(tenant_id: &str, token: &str) -> FakeQlikCloud {
        let script_log =
            std::fs::read_to_string(crate::fixtures::testdata_dir().join("events/script-log.txt"))
                .expect("script log fixture")
                .replace("\r\n", "\n")
                .replace('\n', "\r\n");
        let shared = Arc::new(Shared {
            tenant_id: tenant_id.to_owned(),
            token: Mutex::new(token.to_owned()),
            calls: Mutex::default(),
            faults: Mutex::default(),
            path_faults: Mutex::default(),
            error_rates: Mutex::default(),
            script_log: Mutex::new(Arc::new(script_log)),
            webhooks: Mutex::default(),
            deliveries: Mutex::default(),
            next_delivery: AtomicU64::new(0),
            resent: Mutex::default(),
            app_name: Mutex::default(),
            reloads: Mutex::default(),
            reloads_status: Mutex::default(),
            reloads_next: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(qlik_api)
            .with_state(shared.clone());
        let (addr, task) = serve(app).await;
        FakeQlikCloud {
            addr,
            tenant_id: tenant_id.to_owned(),
            token: token.to_owned(),
            shared,
            task,
        }
    }

    /// From now on, every reload's script log is `log`.
    pub fn set_script_log(&self, log: String) {
        *self.shared.script_log.lock().unwrap() = Arc::new(log);
    }

    /// From now on, every app is called `name` (as a hostile app owner could name one).
    pub fn set_app_name(&self, name: &str) {
        *self.shared.app_name.lock().unwrap() = Some(name.to_owned());
    }

    /// From now on, answer this share of calls with errors (see [`ErrorRates`]).
    pub fn set_error_rates(&self, rates: ErrorRates) {
        *self.shared.error_rates.lock().unwrap() = rates;
    }

    /// From now on, the API key is refused (401), as after it was revoked.
    pub fn revoke_token(&self) {
        *self.shared.token.lock().unwrap() = "revoked".into();
    }

    /// The API key is accepted again.
    pub fn restore_token(&self) {
        *self.shared.token.lock().unwrap() = self.token.clone();
    }

    /// Adds a webhook as if it had been created in Qlik Cloud (an id is given, and three past
    /// deliveries, two of them failed, an hour or more ago).
    pub fn add_webhook(&self, mut webhook: serde_json::Value) {
        let mut hooks = self.shared.webhooks.lock().unwrap();
        let id = format!("wh-{}", hooks.len() + 1);
        webhook["id"] = serde_json::json!(id);
        hooks.push(webhook);
        let past = past_deliveries(&self.shared.next_delivery);
        self.shared.deliveries.lock().unwrap().insert(id, past);
    }

    /// Changes a stored webhook as Qlik would (e.g. `enabled: false` with a `disabledReason`).
    /// Among several of the name, the newest.
    pub fn update_webhook(&self, name: &str, change: serde_json::Value) {
        let mut hooks = self.shared.webhooks.lock().unwrap();
        let hook = hooks
            .iter_mut()
            .rev()
            .find(|w| w["name"] == name)
            .expect("a webhook with that name");
        for (k, v) in change.as_object().expect("an object").iter() {
            hook[k] = v.clone();
        }
    }

    /// Changes the stored webhook with this id.
    pub fn update_webhook_by_id(&self, id: &str, change: serde_json::Value) {
        let mut hooks = self.shared.webhooks.lock().unwrap();
        let hook = hooks
            .iter_mut()
            .find(|w| w["id"] == id)
            .expect("a webhook with that id");
        for (k, v) in change.as_object().expect("an object").iter() {
            hook[k] = v.clone();
        }
    }

    /// A delivery of the webhook (the newest of the name) that happened now, with `status`
    /// (`failed` or `success`).
    pub fn add_delivery(&self, name: &str, status: &str) {
        let id = {
            let hooks = self.shared.webhooks.lock().unwrap();
            let hook = hooks
                .iter()
                .rev()
                .find(|w| w["name"] == name)
                .expect("a webhook with that name");
            hook["id"].as_str().unwrap_or_default().to_owned()
        };
        let n = self.shared.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
        let at = qlik_time(time::OffsetDateTime::now_utc(), n);
        let mut all = self.shared.deliveries.lock().unwrap();
        all.entry(id).or_default().push(delivery(n, status, at));
    }

    /// The webhooks registered so far (as stored, secrets included), oldest first.
    pub fn webhooks(&self) -> Vec<serde_json::Value> {
        self.shared.webhooks.lock().unwrap().clone()
    }

    /// Adds a reload to the tenant's history, at a random place in the list (Qlik promises no
    /// order).
    pub fn add_reload(&self, reload: serde_json::Value) {
        let mut reloads = self.shared.reloads.lock().unwrap();
        let at = fastrand::usize(..=reloads.len());
        reloads.insert(at, reload);
    }

    /// [`FakeQlikCloud::add_reload`], as a function another task can keep (to list reloads as
    /// they end).
    pub fn reload_recorder(&self) -> impl Fn(serde_json::Value) + Send + Sync + Clone + 'static {
        let shared = self.shared.clone();
        move |reload| {
            let mut reloads = shared.reloads.lock().unwrap();
            let at = fastrand::usize(..=reloads.len());
            reloads.insert(at, reload);
        }
    }

    /// `GET /api/v1/reloads` answers `status` (`None`: normally again).
    pub fn set_reloads_status(&self, status: Option<u16>) {
        *self.shared.reloads_status.lock().unwrap() = status;
    }

    /// The first page of the reloads list gives `href` as its `links.next.href` (as a hostile
    /// or broken proxy could).
    pub fn set_reloads_next_link(&self, href: &str) {
        *self.shared.reloads_next.lock().unwrap() = Some(href.to_owned());
    }

    /// Delivery ids that were resent.
    pub fn resent(&self) -> Vec<String> {
        self.shared.resent.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Calls whose path starts with `prefix`.
    pub fn calls_to(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.path_and_query.starts_with(prefix))
            .count()
    }

    /// Drops faults not yet used.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// The next calls are answered with these faults, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .extend(faults.iter().copied());
    }

    /// The next calls whose path (and query) starts with `prefix` are answered with these
    /// faults, in order; other calls are not affected.
    pub fn inject_on(&self, prefix: &str, faults: &[Fault]) {
        let mut queued = self.shared.path_faults.lock().unwrap();
        queued.extend(faults.iter().map(|f| (prefix.to_owned(), *f)));
    }
}

async fn qlik_api(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let index = {
        let mut calls = state.calls.lock().unwrap();
        calls.push(ApiCall {
            path_and_query: request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            authorization: request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status: 0,
            at: Instant::now(),
        });
        calls.len() - 1
    };
    let response = qlik_api_answer(state.clone(), request).await;
    // The call was recorded when it arrived (tests look for calls still being answered).
    if let Some(call) = state.calls.lock().unwrap().get_mut(index) {
        call.status = response.status().as_u16();
    }
    response
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// A page of `all` as Qlik pages a list: `limit` (default `default_limit`, 1–100) from the
/// `next` cursor, and an absolute `links.next.href` while more remain (other query parameters
/// kept); `first_next`, when given, is the first page's next link instead (a hostile one).
fn paged(
    all: &[serde_json::Value],
    query: &str,
    default_limit: usize,
    host: &str,
    path: &str,
    first_next: Option<String>,
) -> Response {
    let limit: usize = match query_param(query, "limit").map(|l| l.parse()) {
        None => default_limit,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"errors":[{"title":"limit must be 1 to 100"}]}"#,
            )
                .into_response()
        }
    };
    let start: usize = query_param(query, "next")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let page: Vec<_> = all.iter().skip(start).take(limit).cloned().collect();
    let mut links = serde_json::json!({});
    if let Some(href) = first_next.filter(|_| start == 0) {
        links["next"] = serde_json::json!({ "href": href });
    } else if start + limit < all.len() {
        let kept: String = query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("next=") && !kv.starts_with("limit="))
            .map(|kv| format!("&{kv}"))
            .collect();
        links["next"] = serde_json::json!({
            "href": format!("http://{host}{path}?limit={limit}&next={}{kept}", start + limit)
        });
    }
    (
        [("content-type", "application/json")],
        serde_json::json!({ "data": page, "links": links }).to_string(),
    )
        .into_response()
}

async fn qlik_api_answer(state: Arc<Shared>, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if authorization.as_deref() != Some(&format!("Bearer {}", state.token.lock().unwrap())) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"title":"Unauthorized","code":"AUTH-1"}]}"#,
        )
            .into_response();
    }
    let for_path = {
        let mut queued = state.path_faults.lock().unwrap();
        let at = queued
            .iter()
            .position(|(prefix, _)| path_and_query.starts_with(prefix.as_str()));
        at.map(|i| queued.remove(i).1)
    };
    let fault = for_path
        .or_else(|| state.faults.lock().unwrap().pop_front())
        .or_else(|| {
            let rates = *state.error_rates.lock().unwrap();
            let roll = fastrand::f64();
            if roll < rates.status_500 {
                Some(Fault::Status(500))
            } else if roll < rates.status_500 + rates.too_many {
                Some(Fault::TooMany(rates.retry_after_secs))
            } else {
                None
            }
        });
    match fault {
        Some(Fault::Status(s)) => {
            return (
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "{}",
            )
                .into_response()
        }
        Some(Fault::TooMany(secs)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "{}",
            )
                .into_response()
        }
        Some(Fault::Redirect(s, to)) => {
            return (
                StatusCode::from_u16(s).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                [("location", to)],
                "",
            )
                .into_response()
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let path = request.uri().path().to_owned();
    // Next links are absolute, on the origin the caller used (as Qlik's are on the tenant's).
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    // The webhooks API at `/api/core/webhooks` (the deprecated `/api/v1/webhooks` answers 404
    // here, so a client still using it is noticed).
    if path.starts_with("/api/core/webhooks") {
        return webhooks_api(&state, &host, request).await;
    }
    // Everything else the listener reads is GET only, as in Qlik's API.
    if request.method() != axum::http::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"errors":[{"title":"Method not allowed"}]}"#,
        )
            .into_response();
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let json = |v: serde_json::Value| {
        ([("content-type", "application/json")], v.to_string()).into_response()
    };
    match segments.as_slice() {
        ["reloads"] => reloads_list(&state, &host, request.uri().query().unwrap_or_default()),
        ["users", "me"] => json(serde_json::json!({
            "id": "me-user", "tenantId": state.tenant_id, "name": "Service account", "email": "svc@example.com"
        })),
        ["users", id] if *id == OWNER_ID => json(serde_json::json!({
            "id": id, "tenantId": state.tenant_id, "name": "Ada Lovelace", "email": "ada@example.com", "status": "active",
            "picture": "https://acme.eu.qlikcloud.com/api/v1/users/65a1f0c2e4b0d1a2b3c4d5e6/actions/picture"
        })),
        // A listed reload as listed (with its log); any other id: a failed reload.
        ["reloads", id] => match state
            .reloads
            .lock()
            .unwrap()
            .iter()
            .find(|r| r["id"] == *id)
        {
            Some(r) => {
                let mut r = r.clone();
                r["log"] = serde_json::json!("Error: see the script log");
                json(r)
            }
            None => json(serde_json::json!({
                "id": id, "appId": "from-reloads-api", "tenantId": state.tenant_id, "userId": OWNER_ID,
                "type": "chronos", "status": "FAILED", "partial": false,
                "creationTime": "2026-11-20T06:14:01.000Z",
                "startTime": "2026-11-20T06:14:04.090Z", "endTime": "2026-11-20T06:14:52.120Z",
                "errorCode": "EngineReloadFailed", "errorMessage": "Field \"Amount\" not found",
                "log": "Error: Field \"Amount\" not found"
            })),
        },
        ["apps", app, "reloads", "logs", _reload] if !app.is_empty() => (
            [("content-type", "text/plain; charset=utf-8")],
            axum::body::Body::from(state.script_log.lock().unwrap().as_bytes().to_vec()),
        )
            .into_response(),
        ["apps", app] => json(serde_json::json!({
            "attributes": {
                "id": app,
                "name": state.app_name.lock().unwrap().clone().unwrap_or_else(|| format!("App {app}")),
                "description": "Demo app",
                "owner": format!("auth0|{OWNER_ID}"), "ownerId": OWNER_ID, "usage": "ANALYTICS",
                "hasSectionAccess": false, "published": true,
                "publishTime": "2026-10-01T09:00:00.000Z",
                "thumbnail": format!("/api/v1/apps/{app}/media/files/thumbnail.png")
            },
            "privileges": []
        })),
        ["items"] => {
            let query = request.uri().query().unwrap_or_default();
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_owned()
            };
            let id = param("resourceId");
            if param("resourceType") != "app" || id.is_empty() {
                // As Qlik: without the filter, items of every kind (here: another app's).
                return json(serde_json::json!({
                    "data": [{ "id": "item-9", "resourceId": "another-app", "resourceType": "app",
                               "name": "Another app", "meta": { "tags": [{ "id": "tag-9", "name": "alert" }] },
                               "resourceSize": { "appFile": 1 } }],
                    "links": {}
                }));
            }
            json(serde_json::json!({
                "data": [{ "id": "item-1", "resourceId": id, "resourceType": "app", "name": format!("App {id}"),
                           "meta": { "tags": [{ "id": "tag-1", "name": "alert" }], "collections": [] },
                           "resourceSize": { "appFile": 52428800, "appMemory": 104857600 } }],
                "links": {}
            }))
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"title":"Not found"}]}"#,
        )
            .into_response(),
    }
}

/// `GET /api/v1/reloads?filter=…&limit=…&next=…` as Qlik documents it: the SCIM filter on
/// `status` with `eq` and `OR` (no filter on time exists), pages of `limit` (default 10), in no
/// promised order. Without `appId`, all of the tenant's reloads (a tenant admin's key).
fn reloads_list(state: &Shared, host: &str, query: &str) -> Response {
    if let Some(status) = *state.reloads_status.lock().unwrap() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "{}").into_response();
    }
    let statuses: Vec<String> = query_param(query, "filter")
        .map(|f| {
            f.split("status eq \"")
                .skip(1)
                .filter_map(|rest| rest.split_once('"').map(|(s, _)| s.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let all: Vec<serde_json::Value> = state
        .reloads
        .lock()
        .unwrap()
        .iter()
        .filter(|r| statuses.is_empty() || statuses.iter().any(|s| r["status"] == *s))
        .cloned()
        .collect();
    let hostile = state.reloads_next.lock().unwrap().clone();
    paged(&all, query, 10, host, "/api/v1/reloads", hostile)
}

/// The webhooks API: list, create, replace (PUT), failed deliveries and resend.
async fn webhooks_api(state: &Shared, host: &str, request: Request) -> Response {
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let path = request.uri().path().to_owned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let segments: Vec<&str> = path
        .trim_start_matches("/api/core/webhooks")
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let json = |status: StatusCode, v: serde_json::Value| {
        (
            status,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    let public = |w: &serde_json::Value| {
        let mut w = w.clone();
        if let Some(o) = w.as_object_mut() {
            o.remove("secret");
        }
        w
    };
    if let ("POST", [id, "deliveries", delivery, "actions", "resend"]) =
        (method.as_str(), segments.as_slice())
    {
        return resend(state, id, delivery).await;
    }
    let mut hooks = state.webhooks.lock().unwrap();
    match (method.as_str(), segments.as_slice()) {
        // Newest first, `limit` a page (default 20, at most 100), as Qlik lists them.
        ("GET", []) => {
            let newest_first: Vec<serde_json::Value> = hooks.iter().rev().map(public).collect();
            paged(&newest_first, &query, 20, host, "/api/core/webhooks", None)
        }
        ("POST", []) => {
            let Ok(mut w) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": [{"title": "bad JSON"}]}),
                );
            };
            if w["name"].as_str().is_none() || w["url"].as_str().is_none() {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": [{"title": "name and url are required"}]}),
                );
            }
            let id = format!("wh-{}", hooks.len() + 1);
            w["id"] = serde_json::json!(id);
            hooks.push(w.clone());
            state
                .deliveries
                .lock()
                .unwrap()
                .insert(id, past_deliveries(&state.next_delivery));
            json(StatusCode::CREATED, public(&w))
        }
        ("PUT", [id]) => {
            let Some(slot) = hooks.iter_mut().find(|w| w["id"] == *id) else {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"errors": [{"title": "not found"}]}),
                );
            };
            let Ok(mut w) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": [{"title": "bad JSON"}]}),
                );
            };
            w["id"] = serde_json::json!(id);
            *slot = w.clone();
            json(StatusCode::OK, public(&w))
        }
        // JSON Patch, as Qlik documents it: `[{"op": "replace", "path": "/enabled", "value": true}]`.
        ("PATCH", [id]) => {
            let Some(slot) = hooks.iter_mut().find(|w| w["id"] == *id) else {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"errors": [{"title": "not found"}]}),
                );
            };
            let Ok(ops) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": [{"title": "expected a JSON Patch array"}]}),
                );
            };
            for op in ops {
                let (Some("replace"), Some(path)) = (op["op"].as_str(), op["path"].as_str()) else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"errors": [{"title": "only replace is supported"}]}),
                    );
                };
                slot[path.trim_start_matches('/')] = op["value"].clone();
                if path == "/enabled" && op["value"] == true {
                    if let Some(o) = slot.as_object_mut() {
                        o.remove("disabledReason");
                    }
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        // Newest first, paged like the list; `status=fail` (or `failed`) for failures only.
        ("GET", [id, "deliveries"]) if hooks.iter().any(|w| w["id"] == *id) => {
            let wanted = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("status="))
                .map(|w| if w == "fail" { "failed" } else { w });
            let all: Vec<serde_json::Value> = state
                .deliveries
                .lock()
                .unwrap()
                .get(*id)
                .map(|d| {
                    d.iter()
                        .rev()
                        .filter(|d| wanted.is_none_or(|w| d["status"] == w))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            paged(
                &all,
                &query,
                20,
                host,
                &format!("/api/core/webhooks/{id}/deliveries"),
                None,
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"errors": [{"title": "not found"}]}),
        ),
    }
}

/// `POST …/deliveries/{id}/actions/resend` as Qlik documents it: the delivery's event again (the
/// stand-in keeps no payloads, so a minimal event of the delivery's type, with an id of its
/// own), to the webhook's current URL, signed with its current secret; the answer is the new
/// delivery, `201` even when it failed, and it joins the webhook's deliveries.
async fn resend(state: &Shared, webhook_id: &str, delivery_id: &str) -> Response {
    let hook = state
        .webhooks
        .lock()
        .unwrap()
        .iter()
        .find(|w| w["id"] == webhook_id)
        .cloned();
    let Some(hook) = hook else {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            serde_json::json!({"errors": [{"title": "not found"}]}).to_string(),
        )
            .into_response();
    };
    state.resent.lock().unwrap().push(delivery_id.to_owned());
    let event_type = state
        .deliveries
        .lock()
        .unwrap()
        .get(webhook_id)
        .and_then(|all| all.iter().find(|d| d["id"] == delivery_id).cloned())
        .and_then(|d| d["eventType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "com.qlik.v1.app.reload.finished".into());
    let body = crate::fixtures::minimal_event(
        &format!("{delivery_id}-resent-{}", fastrand::u32(..)),
        &event_type,
        &state.tenant_id,
    );
    let url = hook["url"].as_str().unwrap_or_default().to_owned();
    let mut request = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
        .post(&url)
        .header("content-type", "application/json")
        .header("user-agent", "Qlik Webhook");
    if let Some(secret) = hook["secret"].as_str() {
        let signature = qlik_events::sign(&qlik_events::Secret::new(secret), &body);
        request = request.header("qlik-signature", signature);
    }
    let (status, message) = match request.body(body).send().await {
        Ok(r) if r.status().is_success() => ("success", r.status().to_string()),
        Ok(r) => ("failed", r.status().to_string()),
        Err(e) => ("failed", format!("could not deliver: {e}")),
    };
    let n = state.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
    let mut new = delivery(n, status, qlik_time(time::OffsetDateTime::now_utc(), n));
    new["statusMessage"] = message.into();
    new["eventType"] = event_type.into();
    state
        .deliveries
        .lock()
        .unwrap()
        .entry(webhook_id.to_owned())
        .or_default()
        .push(new.clone());
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        new.to_string(),
    )
        .into_response()
}
