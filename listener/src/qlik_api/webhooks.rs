//! Qlik Cloud's webhooks API (`/api/core/webhooks`, the replacement of the deprecated
//! `/api/v1/webhooks`: removal on or after 2027-11-01; the same paths below it).
//!
//! Promises: lists are read to their last page ([`super::pages`]); the webhook that calls the
//! forwarder is found by id, or by name, and when several share the name, the one whose URL is
//! the forwarder's ([`choose`]); registering is idempotent by name (a `PUT` sends every writable
//! property again, the secret included, since Qlik clears what a `PUT` omits).

use super::{segment, ApiError, QlikApi};
use qlik_events::event::{APP_RELOAD_FINISHED, RELOAD_FINISHED};
use qlik_events::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

/// Where Qlik Cloud's webhooks API lives.
pub const WEBHOOKS: &str = "/api/core/webhooks";

/// The name `webhook register` gives the webhook (and the watchdog looks for).
pub const DEFAULT_NAME: &str = "qlik-cloud-mqtt-relay";

/// Most pages of webhooks or deliveries read (100 a page).
const MAX_PAGES: usize = 50;

/// A webhook as Qlik Cloud lists it, the fields we use.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Webhook {
    pub id: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub enabled: bool,
    pub event_types: Vec<String>,
    pub enable_cloud_event_delivery: bool,
    /// Why Qlik disabled it, when it did.
    pub disabled_reason: Option<String>,
}

impl Webhook {
    pub fn is_named(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }

    /// Whether it calls `url` (a trailing `/` aside).
    pub fn calls(&self, url: &str) -> bool {
        self.url
            .as_deref()
            .is_some_and(|u| u.trim_end_matches('/') == url.trim_end_matches('/'))
    }

    /// Whether it sends the reloads' final outcomes (`com.qlik.v1.reload.finished`).
    pub fn sends_final_outcomes(&self) -> bool {
        self.event_types.iter().any(|t| t == RELOAD_FINISHED)
    }

    /// Whether it sends any reload event at all.
    pub fn sends_reload_events(&self) -> bool {
        self.event_types
            .iter()
            .any(|t| t == RELOAD_FINISHED || t == APP_RELOAD_FINISHED)
    }
}

/// A delivery of a webhook (`GET /api/core/webhooks/{id}/deliveries`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookDelivery {
    pub id: String,
    /// `success`, or a failure (`fail`; the exact word is not relied on).
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub status_message: Option<String>,
    pub triggered_at: Option<String>,
}

impl WebhookDelivery {
    /// Whether the receiver took it: `Some(true)` for Qlik's `success`, `Some(false)` for a
    /// failure (`fail`, `failed`), `None` when the answer does not say (no status, or a word
    /// not seen before: Qlik's formats have changed before, so neither is taken for the other).
    /// Pure.
    pub fn succeeded(&self) -> Option<bool> {
        let status = self.status.as_deref()?.trim().to_ascii_lowercase();
        if status.starts_with("succe") {
            Some(true)
        } else if status.starts_with("fail") {
            Some(false)
        } else {
            None
        }
    }

    /// When it was triggered, parsed (Qlik writes RFC 3339, with or without fractions and with
    /// `Z` or an offset: compared as times, never as text).
    pub fn triggered(&self) -> Option<time::OffsetDateTime> {
        let t = self.triggered_at.as_deref()?;
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// Which webhook is the one we look for.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice<'a> {
    None,
    One(&'a Webhook),
    /// Several share the name: the one chosen (whose URL is the forwarder's, when one is), and
    /// how many there are.
    OfSeveral(&'a Webhook, usize),
    /// Several share the name and none calls the expected URL (or none was given).
    Ambiguous(Vec<&'a Webhook>),
}

/// The webhook with id `id` when given, else the one named `name`; among several of that name,
/// the one that calls `expected_url`. Pure.
pub fn choose<'a>(
    hooks: &'a [Webhook],
    id: Option<&str>,
    name: &str,
    expected_url: Option<&str>,
) -> Choice<'a> {
    if let Some(id) = id {
        return match hooks.iter().find(|w| w.id == id) {
            Some(w) => Choice::One(w),
            None => Choice::None,
        };
    }
    let named: Vec<&Webhook> = hooks.iter().filter(|w| w.is_named(name)).collect();
    match named.as_slice() {
        [] => Choice::None,
        [one] => Choice::One(one),
        several => {
            let calling: Vec<&&Webhook> = match expected_url {
                Some(url) => several.iter().filter(|w| w.calls(url)).collect(),
                None => Vec::new(),
            };
            match calling.as_slice() {
                [one] => Choice::OfSeveral(one, several.len()),
                _ => Choice::Ambiguous(named),
            }
        }
    }
}

/// Every webhook of the tenant (all pages).
pub async fn list(api: &QlikApi) -> Result<Vec<Webhook>, ApiError> {
    let listing = api
        .list_all(&format!("{WEBHOOKS}?limit=100"), MAX_PAGES)
        .await?;
    Ok(listing.items)
}

/// The webhook's failed deliveries (Qlik keeps 7 days; all pages).
pub async fn failed_deliveries(
    api: &QlikApi,
    webhook_id: &str,
) -> Result<Vec<WebhookDelivery>, ApiError> {
    let path = format!(
        "{WEBHOOKS}/{}/deliveries?status=fail&limit=100",
        segment(webhook_id)
    );
    Ok(api.list_all(&path, MAX_PAGES).await?.items)
}

/// Turns the webhook on (`PATCH`, JSON Patch on `/enabled`): nothing else changes.
pub async fn enable(api: &QlikApi, webhook_id: &str) -> Result<(), ApiError> {
    let path = format!("{WEBHOOKS}/{}", segment(webhook_id));
    let patch = json!([{ "op": "replace", "path": "/enabled", "value": true }]);
    api.write(reqwest::Method::PATCH, &path, &patch)
        .await
        .map(|_| ())
}

/// The webhook's newest delivery, if Qlik kept one (7 days): one page, asked newest first, and
/// the newest of it by time in case the order is not kept.
pub async fn newest_delivery(
    api: &QlikApi,
    webhook_id: &str,
) -> Result<Option<WebhookDelivery>, ApiError> {
    let path = format!(
        "{WEBHOOKS}/{}/deliveries?sort=-triggeredAt&limit=20",
        segment(webhook_id)
    );
    let page = api.list_all::<WebhookDelivery>(&path, 1).await?.items;
    Ok(page.into_iter().max_by_key(|d| d.triggered()))
}

/// Asks Qlik to send a delivery's event again, to the webhook's current URL with its current
/// secret. Qlik answers with the new delivery, which may have failed (a `201` all the same), so
/// the caller looks at [`WebhookDelivery::succeeded`] (an answer it cannot read says nothing).
pub async fn resend(
    api: &QlikApi,
    webhook_id: &str,
    delivery_id: &str,
) -> Result<WebhookDelivery, ApiError> {
    let path = format!(
        "{WEBHOOKS}/{}/deliveries/{}/actions/resend",
        segment(webhook_id),
        segment(delivery_id)
    );
    let answer = api.write(reqwest::Method::POST, &path, &json!({})).await?;
    Ok(serde_json::from_value(answer).unwrap_or_default())
}

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

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{count} webhooks are named {name:?} and none calls {url}: delete the extra ones in the Management Console (Webhooks), or register under another --name (ids: {ids})")]
    Ambiguous {
        name: String,
        url: String,
        count: usize,
        ids: String,
    },
}

impl Registration {
    /// The webhook document Qlik Cloud stores.
    pub fn body(&self, existing: Option<&Webhook>) -> Value {
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
        if existing.is_some_and(|w| w.enable_cloud_event_delivery) {
            body["enableCloudEventDelivery"] = json!(true);
        }
        body
    }
}

/// Creates the webhook, or replaces the one with the same name (among several of that name,
/// the one calling the same URL; with none of them, it refuses rather than guess).
pub async fn register(
    api: &QlikApi,
    registration: &Registration,
) -> Result<Outcome, RegisterError> {
    let hooks = list(api).await?;
    let existing = match choose(&hooks, None, &registration.name, Some(&registration.url)) {
        Choice::None => None,
        Choice::One(w) | Choice::OfSeveral(w, _) => Some(w),
        Choice::Ambiguous(all) => {
            return Err(RegisterError::Ambiguous {
                name: registration.name.clone(),
                url: registration.url.clone(),
                count: all.len(),
                ids: all
                    .iter()
                    .map(|w| w.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    match existing {
        Some(w) => {
            let id = w.id.clone();
            api.write(
                reqwest::Method::PUT,
                &format!("{WEBHOOKS}/{}", segment(&id)),
                &registration.body(Some(w)),
            )
            .await?;
            Ok(Outcome::Updated(id))
        }
        None => {
            let created = api
                .write(reqwest::Method::POST, WEBHOOKS, &registration.body(None))
                .await?;
            Ok(Outcome::Created(
                created["id"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_delivery_is_judged_only_when_its_status_says() {
        let with = |status: Option<&str>| WebhookDelivery {
            status: status.map(str::to_owned),
            ..WebhookDelivery::default()
        };
        assert_eq!(with(Some("success")).succeeded(), Some(true));
        assert_eq!(with(Some("SUCCEEDED")).succeeded(), Some(true));
        assert_eq!(with(Some("fail")).succeeded(), Some(false));
        assert_eq!(with(Some("failed")).succeeded(), Some(false));
        assert_eq!(with(Some("pending")).succeeded(), None);
        assert_eq!(with(None).succeeded(), None);
    }

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
        let existing = Webhook {
            enable_cloud_event_delivery: true,
            ..Webhook::default()
        };
        let b = reg(false).body(Some(&existing));
        assert_eq!(
            b["eventTypes"],
            json!([APP_RELOAD_FINISHED, RELOAD_FINISHED])
        );
        assert!(b.get("filter").is_none());
        assert_eq!(b["enableCloudEventDelivery"], true);
    }

    fn hook(id: &str, name: &str, url: &str) -> Webhook {
        Webhook {
            id: id.into(),
            name: Some(name.into()),
            url: Some(url.into()),
            enabled: true,
            ..Webhook::default()
        }
    }

    #[test]
    fn the_watched_webhook_among_several_of_its_name_is_the_one_calling_the_forwarder() {
        let fwd = "https://relay.example.com/webhook";
        let hooks = [
            hook("a", "relay", "https://old.example.com/"),
            hook("b", "other", fwd),
            hook("c", "relay", &format!("{fwd}/")),
        ];
        assert_eq!(
            choose(&hooks, None, "relay", Some(fwd)),
            Choice::OfSeveral(&hooks[2], 2)
        );
        assert_eq!(choose(&hooks, None, "other", None), Choice::One(&hooks[1]));
        assert_eq!(choose(&hooks, None, "none", Some(fwd)), Choice::None);
        assert_eq!(
            choose(&hooks, None, "relay", None),
            Choice::Ambiguous(vec![&hooks[0], &hooks[2]])
        );
        assert_eq!(
            choose(&hooks, Some("a"), "relay", Some(fwd)),
            Choice::One(&hooks[0])
        );
        assert_eq!(choose(&hooks, Some("z"), "relay", Some(fwd)), Choice::None);
    }

    #[test]
    fn delivery_times_are_compared_as_times_not_text() {
        let at = |t: &str| WebhookDelivery {
            triggered_at: Some(t.into()),
            ..WebhookDelivery::default()
        };
        let since = at("2026-12-03T05:49:00Z").triggered().unwrap();
        // As text, each of these sorts before `since`; as times, each is after it.
        for later in [
            "2026-12-03T05:49:00.5Z",
            "2026-12-03T04:49:30-01:00",
            "2026-12-03T05:49:00.001+00:00",
        ] {
            assert!(later < "2026-12-03T05:49:00Z", "{later}");
            assert!(at(later).triggered().unwrap() > since, "{later}");
        }
        assert!(at("2026-12-03T06:48:00+01:00").triggered().unwrap() < since);
        assert_eq!(at("yesterday").triggered(), None);
    }
}
