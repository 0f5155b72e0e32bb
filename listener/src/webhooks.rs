//! `qlik-listener register-webhook`: create or update the Qlik Cloud webhook that calls the
//! forwarder, list webhooks, and recover after an outage by resending failed deliveries.
//!
//! Idempotent by name: a webhook with the same name is replaced (`PUT`, every writable property
//! sent again, the secret included, since Qlik clears what a `PUT` omits).

use crate::qlik_api::{segment, ApiError, QlikApi};
use qlik_events::event::{APP_RELOAD_FINISHED, RELOAD_FINISHED};
use qlik_events::Secret;
use serde_json::{json, Value};

pub struct Registration {
    pub name: String,
    pub url: String,
    pub secret: Secret,
    /// Only failed app reloads (`data.status eq "error"`), which Qlik allows for
    /// `com.qlik.v1.app.reload.finished` alone.
    pub failures_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Updated(String),
}

impl Registration {
    /// The webhook document Qlik Cloud stores.
    pub fn body(&self, existing: Option<&Value>) -> Value {
        let mut body = json!({
            "name": self.name,
            "description": "Qlik Cloud → MQTT relay: qlik-webhook forwarder",
            "url": self.url,
            "secret": String::from_utf8_lossy(self.secret.expose()),
            "enabled": true,
            "level": "tenant",
        });
        if self.failures_only {
            body["eventTypes"] = json!([APP_RELOAD_FINISHED]);
            body["filter"] = json!("data.status eq \"error\"");
        } else {
            body["eventTypes"] = json!([APP_RELOAD_FINISHED, RELOAD_FINISHED]);
        }
        // Once on, CloudEvents delivery cannot be turned off; a PUT that omits it is refused.
        if existing.is_some_and(|w| w["enableCloudEventDelivery"] == json!(true)) {
            body["enableCloudEventDelivery"] = json!(true);
        }
        body
    }
}

pub async fn list(api: &QlikApi) -> Result<Vec<Value>, ApiError> {
    let answer = api.get_value("/api/v1/webhooks").await?;
    Ok(answer["data"].as_array().cloned().unwrap_or_default())
}

/// Creates the webhook, or replaces the one with the same name.
pub async fn register(api: &QlikApi, registration: &Registration) -> Result<Outcome, ApiError> {
    let existing = list(api)
        .await?
        .into_iter()
        .find(|w| w["name"] == json!(registration.name));
    match existing {
        Some(w) => {
            let id = w["id"].as_str().unwrap_or_default().to_owned();
            api.write(
                reqwest::Method::PUT,
                &format!("/api/v1/webhooks/{}", segment(&id)),
                &registration.body(Some(&w)),
            )
            .await?;
            Ok(Outcome::Updated(id))
        }
        None => {
            let created = api
                .write(
                    reqwest::Method::POST,
                    "/api/v1/webhooks",
                    &registration.body(None),
                )
                .await?;
            Ok(Outcome::Created(
                created["id"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    }
}

/// The webhook's failed deliveries (Qlik keeps 7 days).
pub async fn failed_deliveries(api: &QlikApi, webhook_id: &str) -> Result<Vec<Value>, ApiError> {
    let path = format!(
        "/api/v1/webhooks/{}/deliveries?status=fail",
        segment(webhook_id)
    );
    let answer = api.get_value(&path).await?;
    Ok(answer["data"].as_array().cloned().unwrap_or_default())
}

pub async fn resend(api: &QlikApi, webhook_id: &str, delivery_id: &str) -> Result<(), ApiError> {
    let path = format!(
        "/api/v1/webhooks/{}/deliveries/{}/actions/resend",
        segment(webhook_id),
        segment(delivery_id)
    );
    api.write(reqwest::Method::POST, &path, &json!({}))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(failures_only: bool) -> Registration {
        Registration {
            name: "relay".into(),
            url: "https://x.lambda-url.eu-west-1.on.aws/".into(),
            secret: Secret::new("s"),
            failures_only,
        }
    }

    #[test]
    fn bodies() {
        let b = reg(true).body(None);
        assert_eq!(b["eventTypes"], json!([APP_RELOAD_FINISHED]));
        assert_eq!(b["filter"], "data.status eq \"error\"");
        assert_eq!(b["secret"], "s");
        assert_eq!(b["enabled"], true);
        let b = reg(false).body(Some(&json!({"enableCloudEventDelivery": true})));
        assert_eq!(
            b["eventTypes"],
            json!([APP_RELOAD_FINISHED, RELOAD_FINISHED])
        );
        assert!(b.get("filter").is_none());
        assert_eq!(b["enableCloudEventDelivery"], true);
    }
}
