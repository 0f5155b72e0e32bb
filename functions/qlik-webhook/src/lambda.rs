//! The AWS Lambda mode: API Gateway (REST and HTTP APIs) and Function URL events.
//!
//! lambda_http turns each payload into an `http::Request` and decodes base64 bodies, so the
//! shared [`Forwarder`] sees the same raw bytes Qlik signed. The runtime is only started when
//! `AWS_LAMBDA_RUNTIME_API` is set (see `main.rs`).

use crate::forward::{Forwarder, Reply};
use crate::http::{self as routes, Mode, Route};
use lambda_http::{Body, Request, Response};
use std::convert::Infallible;
use std::sync::Arc;

/// Runs the Lambda runtime loop until the execution environment shuts down.
pub async fn run(forwarder: Arc<Forwarder>) -> Result<(), lambda_http::Error> {
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, Infallible>(handle(&forwarder, request).await) }
    }))
    .await
}

/// Answers one invocation.
pub async fn handle(forwarder: &Forwarder, request: Request) -> Response<Body> {
    let route = routes::route(Mode::Lambda, request.method(), request.uri().path());
    let reply = match route {
        Route::Webhook => match routes::signature(request.headers()) {
            Ok(signature) => forwarder.handle(signature, request.body().as_ref()).await,
            Err(reply) => reply,
        },
        other => routes::route_reply(other),
    };
    to_response(reply, route)
}

fn to_response(reply: Reply, route: Route) -> Response<Body> {
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json");
    if let Route::MethodNotAllowed { allow } = route {
        builder = builder.header("allow", allow);
    }
    builder
        .body(Body::Text(reply.body))
        .unwrap_or_else(|_| Response::new(Body::Text(r#"{"error":"internal error"}"#.into())))
}
