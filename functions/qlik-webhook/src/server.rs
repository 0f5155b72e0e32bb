//! The plain HTTP server mode (`qlik-webhook serve`), for on-prem and container hosts.
//!
//! Promises: the body is read with a hard size limit (413 as soon as it is exceeded, or up front
//! from `Content-Length`) and a time limit (408 for a body that trickles in), so one slow or huge
//! request cannot tie the server up; everything else is the shared [`Forwarder`].

use crate::forward::{Forwarder, Reply};
use crate::http::{self as routes, Mode, Route};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::serve::ListenerExt;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves webhooks on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    forwarder: Arc<Forwarder>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(handle).with_state(forwarder);
    let listener = listener.tap_io(relay_cli::set_nodelay);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn handle(State(forwarder): State<Arc<Forwarder>>, request: Request) -> Response {
    let route = routes::route(Mode::Server, request.method(), request.uri().path());
    let reply = match route {
        Route::Webhook => webhook(&forwarder, request).await,
        other => routes::route_reply(other),
    };
    let mut response = to_response(reply);
    if let Route::MethodNotAllowed { allow } = route {
        response
            .headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static(allow));
    }
    response
}

async fn webhook(forwarder: &Forwarder, request: Request) -> Reply {
    let limit = forwarder.max_body_bytes();
    let too_large = || Reply::error(413, &format!("body is larger than {limit} bytes"));
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let signature = match routes::signature(&parts.headers) {
        Ok(signature) => signature,
        Err(reply) => return reply,
    };
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    let body = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return Reply::error(400, "could not read the request body"),
        Err(_) => return Reply::error(408, "request body not received in time"),
    };
    forwarder.handle(signature, &body).await
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
