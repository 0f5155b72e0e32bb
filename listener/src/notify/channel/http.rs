//! Teams, Slack and our webhook: the message POSTed as JSON.
//!
//! Promises: 2xx is delivered; 408, 429, 5xx and network errors are worth another try; any
//! other status fails at once; a redirect is not followed (301/302/303 would lose the body,
//! 307/308 would send it to a host nobody configured) and is reported with where it pointed,
//! without the query (which may hold a token).

use crate::notify::{AttemptError, SIGNATURE_HEADER};
use qlik_events::Secret;
use std::time::Duration;

/// The client for all HTTP channels.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("qlik-listener/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// What our webhook adds to the request: the event id and, with a secret, the signature.
pub struct Webhook<'a> {
    pub event_id: &'a str,
    pub secret: Option<&'a Secret>,
}

pub async fn post(
    http: &reqwest::Client,
    url: &url::Url,
    body: &str,
    webhook: Option<Webhook<'_>>,
) -> Result<(), AttemptError> {
    let mut request = http
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(w) = webhook {
        request = request.header("X-Qlik-Relay-Event-Id", w.event_id);
        if let Some(secret) = w.secret {
            request = request.header(SIGNATURE_HEADER, qlik_events::sign(secret, body.as_bytes()));
        }
    }
    match request.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) if resp.status().is_redirection() => Err(AttemptError::Permanent(format!(
            "HTTP {} redirect to {}: alerts are not sent on to another URL; configure the final URL",
            resp.status().as_u16(),
            redirect_target(&resp)
        ))),
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status == 429 || status >= 500 || status == 408 {
                Err(AttemptError::Retry(format!("HTTP {status}")))
            } else {
                Err(AttemptError::Permanent(format!("HTTP {status}")))
            }
        }
        Err(e) if e.is_timeout() => Err(AttemptError::Retry("timed out".into())),
        Err(e) if e.is_connect() => Err(AttemptError::Retry("cannot connect".into())),
        Err(_) => Err(AttemptError::Retry("request failed".into())),
    }
}

/// Where a redirect pointed, without its query (which may hold a token), for the error.
fn redirect_target(resp: &reqwest::Response) -> String {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    match location.map(|l| resp.url().join(l)) {
        Some(Ok(mut url)) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        Some(Err(_)) => "an unreadable Location".into(),
        None => "nowhere (no Location)".into(),
    }
}
