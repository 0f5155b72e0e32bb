//! The plain HTTP server mode (`qlik-webhook serve`), for on-prem and container hosts.
//!
//! Promises: a client cannot hold the server: request heads must arrive within the header-read
//! timeout, connections are capped and slow or idle ones make room for new ones
//! ([`crate::admission`]); the body is read with a hard size limit (413 as soon as it is exceeded, or up front
//! from `Content-Length`) and a time limit (408 for a body that trickles in), so one slow or huge
//! request cannot tie the server up; everything else is the shared [`Forwarder`].
//!
//! An early 413 is sent with `Connection: close`, and the rest of the body is then read and
//! thrown away (at most [`DRAIN_BYTES`] for at most [`DRAIN_TIME`]) before the connection is
//! closed: closing with unread data makes the kernel reset the connection, and a client still
//! sending would see a broken pipe instead of the 413.

use crate::admission::{Admission, Admit, Ticket};
use crate::forward::{Forwarder, Reply};
use crate::http::{self as routes, Mode, Route};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Most of an oversized body read and thrown away after its early 413.
pub const DRAIN_BYTES: usize = 32 * 1024 * 1024;
/// Longest time spent on that.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
/// How long open requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections held at once (`MAX_CONNECTIONS`); keep it well below the process's
    /// file-descriptor limit.
    pub max_connections: usize,
    /// How long a client may take to send a request head, and how long a kept-alive
    /// connection may sit idle (`HEADER_READ_TIMEOUT_SECONDS`).
    pub header_read_timeout: Duration,
}

/// Default of [`Limits::max_connections`] (`MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default of [`Limits::header_read_timeout`] in seconds (`HEADER_READ_TIMEOUT_SECONDS`).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Serves webhooks on `listener` until `shutdown` completes, then finishes open requests.
///
/// Each connection is served by hyper's HTTP/1 server with a header-read timeout (which also
/// closes kept-alive connections idle that long); [`Admission`] decides which connections are
/// held when there are too many.
pub async fn serve(
    listener: tokio::net::TcpListener,
    forwarder: Arc<Forwarder>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admission = Admission::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut warned = Warned::default();
    tokio::pin!(shutdown);
    loop {
        let mut stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection aborted before it was taken:
                    // wait a moment instead of spinning, and say so now and then.
                    if warned.due() {
                        tracing::warn!(error = %e, held = admission.held(), "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        relay_cli::set_nodelay(&mut stream);
        match admission.admit() {
            Admit::Yes { ticket, evicted } => {
                if evicted && warned.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "too many connections: closing the oldest idle ones to make room"
                    );
                }
                let forwarder = Arc::clone(&forwarder);
                connections.spawn(connection(
                    http.clone(),
                    stream,
                    forwarder,
                    ticket,
                    stopped.clone(),
                ));
            }
            Admit::Full => {
                if warned.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "too many connections, all busy: new ones are answered 503"
                    );
                }
                connections.spawn(shed(stream));
            }
        }
    }
    // Idle connections close now; requests in progress finish (they are bounded by the body
    // and publish timeouts).
    let _ = stop.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Rate-limits a warning to once every 10 s.
#[derive(Default)]
struct Warned(Option<tokio::time::Instant>);

impl Warned {
    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let due = self
            .0
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10));
        if due {
            self.0 = Some(now);
        }
        due
    }
}

/// Serves one connection until it closes, is evicted, or the server stops.
async fn connection(
    http: hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    forwarder: Arc<Forwarder>,
    ticket: Ticket,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let busy = Arc::clone(&ticket.busy);
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let forwarder = Arc::clone(&forwarder);
            let busy = Arc::clone(&busy);
            async move {
                busy.store(true, Ordering::SeqCst);
                let response = handle(&forwarder, request.map(Body::new)).await;
                busy.store(false, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        // Closed (dropped) to make room for a newer connection; it was not in a request.
        _ = ticket.evict.notified() => false,
        _ = stopped.wait_for(|s| *s) => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
    drop(ticket);
}

/// Answers a connection the server cannot hold with 503 and closes it, reading (and
/// dropping) a little of what the client sent so the close does not reset the connection
/// before the answer is read.
async fn shed(mut stream: tokio::net::TcpStream) {
    const BODY: &str = r#"{"error":"too many connections; try again"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let limit = Duration::from_secs(1);
    if tokio::time::timeout(limit, stream.write_all(answer.as_bytes()))
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut read = 0usize;
    let _ = tokio::time::timeout(limit, async {
        while read < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

async fn handle(forwarder: &Forwarder, request: Request) -> Response {
    let route = routes::route(Mode::Server, request.method(), request.uri().path());
    let mut response = match route {
        Route::Webhook => webhook(forwarder, request).await,
        other => to_response(routes::route_reply(other)),
    };
    if let Route::MethodNotAllowed { allow } = route {
        response
            .headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static(allow));
    }
    response
}

async fn webhook(forwarder: &Forwarder, request: Request) -> Response {
    let limit = forwarder.max_body_bytes();
    let too_large = |rest: Body| {
        // The rest of the body is drained off the request path, after the answer is sent.
        tokio::spawn(drain(rest));
        let mut response = to_response(Reply::error(
            413,
            &format!("body is larger than {limit} bytes"),
        ));
        response
            .headers_mut()
            .insert(CONNECTION, http::HeaderValue::from_static("close"));
        response
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(request.into_body());
    }
    let (parts, mut body) = request.into_parts();
    let signature = match routes::signature(&parts.headers) {
        Ok(signature) => signature,
        Err(reply) => return to_response(reply),
    };
    let mut received = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if received.len() + data.len() > limit {
                        return too_large(body);
                    }
                    received.extend_from_slice(&data);
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return to_response(Reply::error(400, "could not read the request body"))
            }
            Err(_) => return to_response(Reply::error(408, "request body not received in time")),
        }
    }
    to_response(forwarder.handle(signature, &received).await)
}

/// Reads and drops what is left of `body`, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(mut body: Body) {
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

fn to_response(reply: Reply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
