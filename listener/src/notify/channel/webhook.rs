//! Our own webhook: the alert's JSON document POSTed with the event id and, with a secret, an
//! HMAC-SHA256 signature of the body (`X-Qlik-Relay-Signature`, as Qlik signs its own).

use super::http;
use crate::notify::AttemptError;
use qlik_events::Secret;

pub async fn send(
    client: &reqwest::Client,
    url: &url::Url,
    secret: Option<&Secret>,
    event_id: &str,
    body: &str,
) -> Result<(), AttemptError> {
    let signed = http::Webhook { event_id, secret };
    http::post(client, url, body, Some(signed)).await
}
