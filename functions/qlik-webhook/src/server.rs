//! The plain HTTP server mode (`qlik-webhook serve`), for on-prem and container hosts.
//!
//! Promises: a client cannot hold the server: request heads must arrive within the header-read
//! timeout, connections are capped and slow or idle ones make room for new ones (the shared
//! loop in [`relay_cli::connections`]); the body is read with a hard size limit (413 as soon as
//! it is exceeded, or up front from `Content-Length`) and a time limit (408 for a body that
//! trickles in), so one slow or huge request cannot tie the server up; everything else is the
//! shared [`Forwarder`].
//!
//! An early 413 is sent with `Connection: close`, and the rest of the body is then read and
//! thrown away (at most [`DRAIN_BYTES`] for at most [`DRAIN_TIME`]) before the connection is
//! closed: closing with unread data makes the kernel reset the connection, and a client still
//! sending would see a broken pipe instead of the 413.

use crate::forward::{Forwarder, Reply};
use crate::http::{self as routes, Mode, Route};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use relay_cli::connections::Limits;

/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Most of an oversized body read and thrown away after its early 413.
pub const DRAIN_BYTES: usize = 32 * 1024 * 1024;
/// Longest time spent on that.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Default of [`Limits::max_connections`] (`MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default of [`Limits::header_read_timeout`] in seconds (`HEADER_READ_TIMEOUT_SECONDS`).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Serves webhooks on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    forwarder: Arc<Forwarder>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |request: Request| {
        let forwarder = Arc::clone(&forwarder);
        async move { handle(&forwarder, request).await }
    });
    relay_cli::connections::serve(listener, None, app, limits, shutdown).await
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
