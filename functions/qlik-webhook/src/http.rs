//! Routing and HTTP details shared by the server and the Lambda adapter, so both answer alike.
//!
//! Server mode: `POST /` and `POST /webhook` take webhooks, `GET /healthz` answers 200, other
//! methods on those paths get 405 with `Allow`, other paths 404. Lambda mode: API Gateway or
//! the Function URL already chose the route, so every path but `…/healthz` is the webhook.

use crate::forward::Reply;
use http::{HeaderMap, Method};

/// The header Qlik signs with (names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "qlik-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Server,
    Lambda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Webhook,
    Health,
    NotFound,
    MethodNotAllowed { allow: &'static str },
}

pub fn route(mode: Mode, method: &Method, path: &str) -> Route {
    let health = match mode {
        Mode::Server => path == "/healthz",
        Mode::Lambda => path.ends_with("/healthz"),
    };
    let webhook = match mode {
        Mode::Server => matches!(path, "/" | "/webhook"),
        Mode::Lambda => !health,
    };
    if health {
        return match *method {
            Method::GET | Method::HEAD => Route::Health,
            _ => Route::MethodNotAllowed { allow: "GET, HEAD" },
        };
    }
    if webhook {
        return match *method {
            Method::POST => Route::Webhook,
            _ => Route::MethodNotAllowed { allow: "POST" },
        };
    }
    Route::NotFound
}

/// The replies for routes that never reach the forwarder.
pub fn route_reply(route: Route) -> Reply {
    match route {
        Route::Health => Reply {
            status: 200,
            body: r#"{"status":"ok"}"#.to_owned(),
        },
        Route::NotFound => Reply::error(404, "not found: POST webhooks to / or /webhook"),
        Route::MethodNotAllowed { .. } => Reply::error(405, "method not allowed"),
        Route::Webhook => Reply::error(500, "internal routing error"),
    }
}

/// The `Qlik-Signature` value; a request carrying it twice is refused (which one would count?).
pub fn signature(headers: &HeaderMap) -> Result<Option<&[u8]>, Reply> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Reply::error(401, "more than one Qlik-Signature header"));
    }
    Ok(first.map(|v| v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_routes() {
        use Route::*;
        let cases = [
            (Method::POST, "/", Webhook),
            (Method::POST, "/webhook", Webhook),
            (Method::GET, "/", MethodNotAllowed { allow: "POST" }),
            (Method::PUT, "/webhook", MethodNotAllowed { allow: "POST" }),
            (Method::GET, "/healthz", Health),
            (Method::HEAD, "/healthz", Health),
            (
                Method::POST,
                "/healthz",
                MethodNotAllowed { allow: "GET, HEAD" },
            ),
            (Method::POST, "/webhooks", NotFound),
            (Method::POST, "/webhook/", NotFound),
            (Method::GET, "/../etc/passwd", NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(Mode::Server, &method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn lambda_routes() {
        use Route::*;
        assert_eq!(route(Mode::Lambda, &Method::POST, "/"), Webhook);
        assert_eq!(route(Mode::Lambda, &Method::POST, "/prod/qlik"), Webhook);
        assert_eq!(
            route(Mode::Lambda, &Method::GET, "/"),
            MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(route(Mode::Lambda, &Method::GET, "/prod/healthz"), Health);
    }

    #[test]
    fn signature_header() {
        let mut h = HeaderMap::new();
        assert_eq!(signature(&h), Ok(None));
        h.insert("Qlik-Signature", "abc".parse().unwrap());
        assert_eq!(signature(&h), Ok(Some(&b"abc"[..])));
        h.append("qlik-signature", "def".parse().unwrap());
        assert_eq!(signature(&h).unwrap_err().status, 401);
    }
}
