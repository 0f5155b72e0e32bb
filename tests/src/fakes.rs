//! HTTP stand-ins for AWS services the tests cannot reach, speaking their documented APIs:
//! the Lambda Runtime API (so the real `bootstrap` binary runs as it would in Lambda) and the
//! IoT data plane's `Publish` (`POST /topics/{topic}?qos=1`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) async fn serve(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// The Lambda Runtime API (`/2018-06-01/runtime/...`): hands out queued events on
/// `invocation/next` and routes each `invocation/{id}/response` back to its caller.
pub struct FakeRuntime {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
    task: tokio::task::JoinHandle<()>,
}

struct RuntimeState {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, serde_json::Value)>>,
    queue: mpsc::UnboundedSender<(String, serde_json::Value)>,
    waiting: Mutex<HashMap<String, oneshot::Sender<serde_json::Value>>>,
    next_id: AtomicU64,
    /// When the function first asked for an invocation: the end of its cold start.
    first_next: Mutex<Option<std::time::Instant>>,
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRuntime {
    pub async fn start() -> FakeRuntime {
        let (queue, events) = mpsc::unbounded_channel();
        let state = Arc::new(RuntimeState {
            events: tokio::sync::Mutex::new(events),
            queue,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            first_next: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(runtime_api)
            .with_state(state.clone());
        let (addr, task) = serve(app).await;
        FakeRuntime { addr, state, task }
    }

    /// When the function first called `invocation/next` (the end of its initialisation).
    pub fn first_next(&self) -> Option<std::time::Instant> {
        *self.state.first_next.lock().unwrap()
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn api(&self) -> String {
        self.addr.to_string()
    }

    /// Sends one invocation and returns the function's response document.
    pub async fn invoke(&self, event: serde_json::Value) -> serde_json::Value {
        let id = format!("req-{}", self.state.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.state.waiting.lock().unwrap().insert(id.clone(), tx);
        self.state.queue.send((id, event)).expect("queue event");
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("no Lambda response within 20 s")
            .expect("runtime fake dropped")
    }
}

async fn runtime_api(State(state): State<Arc<RuntimeState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let body = axum::body::to_bytes(request.into_body(), 10 << 20)
        .await
        .unwrap_or_default();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if rest == "invocation/next" {
        state
            .first_next
            .lock()
            .unwrap()
            .get_or_insert_with(std::time::Instant::now);
        let next = state.events.lock().await.recv().await;
        let Some((id, event)) = next else {
            return StatusCode::GONE.into_response();
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + 30_000)
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert("lambda-runtime-aws-request-id", id.parse().expect("header"));
        headers.insert(
            "lambda-runtime-deadline-ms",
            deadline.to_string().parse().expect("header"),
        );
        headers.insert(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:eu-west-1:123456789012:function:qlik-webhook"
                .parse()
                .expect("header"),
        );
        headers.insert("content-type", "application/json".parse().expect("header"));
        return (StatusCode::OK, headers, event.to_string()).into_response();
    }
    if let Some(inv) = rest.strip_prefix("invocation/") {
        let (id, kind) = inv.split_once('/').unwrap_or((inv, ""));
        let doc = match kind {
            "response" => serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            _ => serde_json::json!({ "lambdaError": String::from_utf8_lossy(&body) }),
        };
        if let Some(tx) = state.waiting.lock().unwrap().remove(id) {
            let _ = tx.send(doc);
        }
        return StatusCode::ACCEPTED.into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// A body as Lambda events carry it: text, or base64 for binary payloads.
fn lambda_body(body: &[u8], base64: bool) -> String {
    if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).expect("text body must be UTF-8")
    }
}

/// An API Gateway HTTP API / Function URL (payload 2.0) event.
pub fn function_url_event(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    base64: bool,
) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(*v)))
        .collect();
    let body = lambda_body(body, base64);
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnop",
            "domainName": "abcdefghijklmnop.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "abcdefghijklmnop",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "Qlik Webhook"
            },
            "requestId": "c9a8b7e6-0000-4000-8000-000000000001",
            "routeKey": "$default",
            "stage": "$default",
            "time": "20/Nov/2026:06:14:53 +0000",
            "timeEpoch": 1795155293000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

/// An API Gateway REST API (payload 1.0) proxy event.
pub fn rest_api_event(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    base64: bool,
) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let multi: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!([v])))
        .collect();
    let body = lambda_body(body, base64);
    serde_json::json!({
        "resource": "/webhook",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "1234567890",
            "resourceId": "abc123",
            "stage": "prod",
            "requestId": "c9a8b7e6-0000-4000-8000-000000000002",
            "identity": { "sourceIp": "203.0.113.10", "userAgent": "Qlik Webhook" },
            "resourcePath": "/webhook",
            "httpMethod": method,
            "path": format!("/prod{path}"),
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1795155293000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

/// The body of a Lambda HTTP response document, decoded if it is base64.
pub fn response_body(doc: &serde_json::Value) -> String {
    let body = doc["body"].as_str().unwrap_or_default();
    if doc["isBase64Encoded"].as_bool() == Some(true) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64 body");
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        body.to_owned()
    }
}

/// One `Publish` call received by [`FakeIotData`].
#[derive(Debug, Clone)]
pub struct IotPublish {
    pub topic: String,
    pub query: HashMap<String, String>,
    /// `x-amz-mqtt5-user-properties`, decoded from base64 and parsed.
    pub user_properties: Option<serde_json::Value>,
    pub payload: Vec<u8>,
    pub signed: bool,
}

/// The IoT data plane's `POST /topics/{topic}`: records each call and answers with the
/// configured status (200 by default).
pub struct FakeIotData {
    pub addr: SocketAddr,
    published: Arc<Mutex<Vec<IotPublish>>>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIotData {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type IotState = (Arc<Mutex<Vec<IotPublish>>>, Arc<AtomicU16>);

impl FakeIotData {
    pub async fn start() -> FakeIotData {
        let published = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let app = axum::Router::new()
            .fallback(iot_publish)
            .with_state((published.clone(), status.clone()));
        let (addr, task) = serve(app).await;
        FakeIotData {
            addr,
            published,
            status,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn published(&self) -> Vec<IotPublish> {
        self.published.lock().unwrap().clone()
    }

    /// Makes the next calls answer `status` (e.g. 503, or 403 for a denied topic).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

async fn iot_publish(State((published, status)): State<IotState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(raw_topic) = parts.uri.path().strip_prefix("/topics/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if parts.method != axum::http::Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let topic = percent_decode(raw_topic);
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let user_properties = parts
        .headers
        .get("x-amz-mqtt5-user-properties")
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .and_then(|json| serde_json::from_slice(&json).ok());
    let payload = axum::body::to_bytes(body, 10 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let signed = match sigv4_check(&parts, &payload) {
        Ok(()) => true,
        Err(why) => {
            // As IoT Core: an unsigned or wrongly signed request is refused.
            let body = serde_json::json!({ "message": why }).to_string();
            return (
                StatusCode::FORBIDDEN,
                [
                    ("content-type", "application/json"),
                    ("x-amzn-errortype", "ForbiddenException"),
                ],
                body,
            )
                .into_response();
        }
    };
    let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    if status.is_success() {
        published.lock().unwrap().push(IotPublish {
            topic,
            query,
            user_properties,
            payload,
            signed,
        });
        return (status, [("content-type", "application/json")], "{}").into_response();
    }
    let body = serde_json::json!({ "message": "simulated failure" }).to_string();
    (
        status,
        [
            ("content-type", "application/json"),
            ("x-amzn-errortype", "ServiceUnavailableException"),
        ],
        body,
    )
        .into_response()
}

/// The AWS credentials the stand-in accepts (what the tests give the forwarder).
pub const AWS_ACCESS_KEY_ID: &str = "AKIDTESTTESTTESTTEST";
pub const AWS_SECRET_ACCESS_KEY: &str = "test-aws-secret-key";

/// Verifies the request's SigV4 signature as AWS does: the `Authorization` header's credential
/// scope and signed headers, and the signature recomputed over the request with the secret key.
fn sigv4_check(parts: &axum::http::request::Parts, body: &[u8]) -> Result<(), String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = header("authorization").ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
            .ok_or(format!("no {name} in Authorization"))
    };
    let (credential, signed_headers, signature) = (
        field("Credential")?,
        field("SignedHeaders")?,
        field("Signature")?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _day, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("bad credential scope {credential}"));
    };
    if *key_id != AWS_ACCESS_KEY_ID {
        return Err(format!("unknown access key {key_id}"));
    }
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date")?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let time = time::PrimitiveDateTime::parse(&amz_date, &format)
        .map_err(|e| format!("X-Amz-Date {amz_date}: {e}"))?
        .assume_utc();
    let headers: Vec<(String, String)> = signed_headers
        .split(';')
        .map(|name| (name.to_owned(), header(name).unwrap_or_default()))
        .collect();
    let identity = aws_credential_types::Credentials::new(
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        header("x-amz-security-token"),
        None,
        "iot-stand-in",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time.into())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let host = header("host").ok_or("no Host")?;
    let uri = format!(
        "http://{host}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let request = SignableRequest::new(
        parts.method.as_str(),
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (_, expected) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if expected == signature {
        Ok(())
    } else {
        Err("the request signature we calculated does not match the signature you provided".into())
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One request an [`HttpReceiver`] got, and what it answered.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl HttpRequest {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A webhook receiver (Teams' Power Automate workflow, Slack's incoming webhook, anyone's
/// endpoint): records every request and answers 200, or the injected faults first.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    faults: Arc<Mutex<std::collections::VecDeque<Fault>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ReceiverState = (
    Arc<Mutex<Vec<HttpRequest>>>,
    Arc<Mutex<std::collections::VecDeque<Fault>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl HttpReceiver {
    pub async fn start() -> HttpReceiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = axum::Router::new().fallback(receive).with_state((
            requests.clone(),
            faults.clone(),
            down.clone(),
        ));
        let (addr, task) = serve(app).await;
        HttpReceiver {
            addr,
            requests,
            faults,
            down,
            task,
        }
    }

    /// While down, every request is answered 503 Service Unavailable (an outage of the
    /// service behind the URL, as Power Automate and Slack report one).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, answered or not.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests answered with 2xx: what was delivered.
    pub fn delivered(&self) -> Vec<HttpRequest> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// The next requests are answered with these faults, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend(faults.iter().copied());
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }
}

async fn receive(
    State((requests, faults, down)): State<ReceiverState>,
    request: Request,
) -> Response {
    let at = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 10 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let fault = if down.load(std::sync::atomic::Ordering::SeqCst) {
        Some(Fault::Status(503))
    } else {
        faults.lock().unwrap().pop_front()
    };
    let mut location = None;
    let (status, retry_after) = match fault {
        Some(Fault::Status(s)) => (s, None),
        Some(Fault::Redirect(s, to)) => {
            location = Some(to);
            (s, None)
        }
        Some(Fault::TooMany(secs)) => (429, Some(secs)),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            (200, None)
        }
        None => (200, None),
    };
    requests.lock().unwrap().push(HttpRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body,
        status,
        at,
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    match (retry_after, location) {
        (Some(secs), _) => (status, [("retry-after", secs.to_string())], "").into_response(),
        (None, Some(to)) => (status, [("location", to)], "").into_response(),
        (None, None) => (status, "1").into_response(),
    }
}

pub use crate::qlik_cloud::{ApiCall, ErrorRates, FakeQlikCloud, OWNER_ID};

/// How the next call is answered instead of normally.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Status(u16),
    /// HTTP 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// Answers after this long.
    Delay(Duration),
    /// Answers with this redirect status and `Location: <path>` on the same server.
    Redirect(u16, &'static str),
}
