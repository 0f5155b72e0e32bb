//! A small client for the Qlik Cloud REST API calls the listener needs (design.md §5).
//!
//! Promises: every call has a bounded time; HTTP 429 waits for `Retry-After` (capped) and 5xx or
//! network errors are retried with back-off a few times; the bearer token never appears in an
//! error or a log line; what rarely changes (an app's attributes and tags, a user) is reused
//! for [`KEEP_FOR`], so a burst of failures of one app costs two calls per event, not five
//! (Qlik's tier-1 limit is 1,000 calls a minute).

mod pages;
mod script_log;
pub mod webhooks;

use qlik_events::Secret;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times a call is tried in all.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long an app's attributes, its tags and a user are reused after a successful lookup.
pub const KEEP_FOR: Duration = Duration::from_secs(60);
/// Most lookups of each kind kept.
const KEEP_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("GET {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("GET {path}: {reason}")]
    Transport { path: String, reason: String },
    #[error("GET {path}: unexpected response: {reason}")]
    Body { path: String, reason: String },
}

/// What to do when Qlik Cloud refuses an API key, in the words of Qlik Cloud's own menus: one
/// wording for every message that asks for a new key.
pub const NEW_KEY: &str = "create a new one (profile → Settings → API keys → Generate new key; the key's user must be a Tenant Admin for the webhook watchdog and reconciliation)";

impl ApiError {
    /// Qlik Cloud refused the API key (401 or 403): wrong, expired or revoked.
    pub fn is_key_refused(&self) -> bool {
        matches!(
            self,
            ApiError::Status {
                status: 401 | 403,
                ..
            }
        )
    }
}

#[derive(Clone)]
pub struct QlikApi {
    http: reqwest::Client,
    base: url::Url,
    token: Secret,
    /// Back-off unit between retries (shortened in tests).
    backoff: Duration,
    recent: Arc<Recent>,
}

/// Successful lookups that rarely change, by id.
#[derive(Default)]
struct Recent {
    apps: Memo<AppInfo>,
    items: Memo<AppItem>,
    users: Memo<UserInfo>,
}

/// Values by key, each for [`KEEP_FOR`] after it was stored; at most [`KEEP_MAX`].
struct Memo<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            entries: Mutex::default(),
        }
    }
}

impl<T: Clone> Memo<T> {
    fn get(&self, key: &str) -> Option<T> {
        self.get_at(key, Instant::now())
    }

    /// The value of `key` if it was stored less than [`KEEP_FOR`] before `now`.
    fn get_at(&self, key: &str, now: Instant) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, value) = entries.get(key)?;
        (now.saturating_duration_since(*at) < KEEP_FOR).then(|| value.clone())
    }

    fn put(&self, key: &str, value: &T) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= KEEP_MAX {
            entries.retain(|_, (at, _)| at.elapsed() < KEEP_FOR);
            if entries.len() >= KEEP_MAX {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (Instant::now(), value.clone()));
    }

    /// The kept value, or `lookup`'s, kept when it succeeded.
    async fn or_fetch<F>(&self, key: &str, lookup: F) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let value = lookup.await?;
        self.put(key, &value);
        Ok(value)
    }
}

/// `GET /api/v1/reloads/{id}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloadInfo {
    #[serde(rename = "type")]
    pub trigger: Option<String>,
    pub status: Option<String>,
    pub creation_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub log: Option<String>,
}

/// `GET /api/v1/apps/{id}`: `attributes`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub name: Option<String>,
    pub description: Option<String>,
    pub owner_id: Option<String>,
    pub has_section_access: Option<bool>,
    pub published: Option<bool>,
    pub publish_time: Option<String>,
    /// A path on the tenant (`/api/v1/apps/…/media/…`), empty when the app has none.
    pub thumbnail: Option<String>,
}

/// `GET /api/v1/items?resourceType=app&resourceId={id}`: the app's item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppItem {
    /// Tag names (`meta.tags[].name`).
    pub tags: Vec<String>,
    /// `resourceSize.appFile`, bytes.
    pub app_file_size: Option<u64>,
}

/// `GET /api/v1/users/{id}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub name: Option<String>,
    pub email: Option<String>,
    pub tenant_id: Option<String>,
    /// A URL of the user's picture.
    pub picture: Option<String>,
}

impl QlikApi {
    pub fn new(base: url::Url, token: Secret) -> Result<QlikApi, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("qlik-listener/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport {
                path: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(QlikApi {
            http,
            base,
            token,
            backoff: Duration::from_millis(500),
            recent: Arc::default(),
        })
    }

    pub async fn reload(&self, reload_id: &str) -> Result<ReloadInfo, ApiError> {
        self.get_json(&format!("/api/v1/reloads/{}", segment(reload_id)))
            .await
    }

    pub async fn app(&self, app_id: &str) -> Result<AppInfo, ApiError> {
        #[derive(Deserialize)]
        struct App {
            attributes: AppInfo,
        }
        let lookup = async {
            let app: App = self
                .get_json(&format!("/api/v1/apps/{}", segment(app_id)))
                .await?;
            Ok(app.attributes)
        };
        self.recent.apps.or_fetch(app_id, lookup).await
    }

    /// The app's item: its tag names and file size.
    pub async fn app_item(&self, app_id: &str) -> Result<AppItem, ApiError> {
        #[derive(Deserialize)]
        struct Items {
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Item {
            resource_id: Option<String>,
            meta: Option<Meta>,
            resource_size: Option<ResourceSize>,
        }
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default)]
            tags: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ResourceSize {
            app_file: Option<f64>,
        }
        let path = format!(
            "/api/v1/items?resourceType=app&resourceId={}",
            segment(app_id)
        );
        let lookup = async {
            let items: Items = self.get_json(&path).await?;
            // The item of this app; a stand-in or proxy that ignores the query must not lend
            // another app's tags.
            let Some(item) = items
                .data
                .into_iter()
                .find(|i| i.resource_id.as_deref() == Some(app_id))
            else {
                return Ok(AppItem::default());
            };
            Ok(AppItem {
                tags: item
                    .meta
                    .map(|m| m.tags.into_iter().map(|t| t.name).collect())
                    .unwrap_or_default(),
                app_file_size: item
                    .resource_size
                    .and_then(|r| r.app_file)
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(|n| n.round() as u64),
            })
        };
        self.recent.items.or_fetch(app_id, lookup).await
    }

    pub async fn user(&self, user_id: &str) -> Result<UserInfo, ApiError> {
        let path = format!("/api/v1/users/{}", segment(user_id));
        self.recent
            .users
            .or_fetch(user_id, self.get_json(&path))
            .await
    }

    /// `GET /api/v1/users/me`: the caller, with `tenantId`.
    pub async fn me(&self) -> Result<UserInfo, ApiError> {
        self.get_json("/api/v1/users/me").await
    }

    /// One write (`POST` or `PUT`) with a JSON body; not retried (it may not be idempotent).
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let url = self.url_of(path)?;
        let token = String::from_utf8_lossy(self.token.expose()).into_owned();
        let resp = self
            .http
            .request(method, url)
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Transport {
                path: path.to_owned(),
                reason: without_url(&e),
            })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                path: path.to_owned(),
                status,
            });
        }
        let bytes = resp.bytes().await.map_err(|e| ApiError::Transport {
            path: path.to_owned(),
            reason: without_url(&e),
        })?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// The URL of `path` on the tenant; a path that would lead to another origin is refused, so
    /// the API key only ever goes to the configured tenant.
    fn url_of(&self, path: &str) -> Result<url::Url, ApiError> {
        let url = self.base.join(path).map_err(|e| ApiError::Transport {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if url.origin() != self.base.origin() {
            return Err(ApiError::Transport {
                path: path.to_owned(),
                reason: "refused: the path leads away from the tenant".into(),
            });
        }
        Ok(url)
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ApiError> {
        let bytes = self.get(path, "application/json").await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Body {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    async fn get(&self, path: &str, accept: &str) -> Result<bytes::Bytes, ApiError> {
        let response = self.send(path, accept).await?;
        response.bytes().await.map_err(|e| ApiError::Transport {
            path: path.to_owned(),
            reason: without_url(&e),
        })
    }

    /// GETs `path` with retries; the successful response, its body not yet read.
    async fn send(&self, path: &str, accept: &str) -> Result<reqwest::Response, ApiError> {
        let url = self.url_of(path)?;
        let token = String::from_utf8_lossy(self.token.expose()).into_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = self
                .http
                .get(url.clone())
                .bearer_auth(&token)
                .header("accept", accept)
                .send()
                .await;
            let ok = matches!(&result, Ok(r) if r.status().is_success());
            crate::metrics::METRICS.qlik_api_call(started.elapsed(), ok);
            let wait = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retryable = status == 429 || status >= 500;
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(ApiError::Status {
                            path: path.to_owned(),
                            status,
                        });
                    }
                    retry_after(&resp).unwrap_or(self.backoff * 2u32.pow(attempt - 1))
                }
                Err(e) => {
                    if attempt >= ATTEMPTS {
                        return Err(ApiError::Transport {
                            path: path.to_owned(),
                            reason: without_url(&e),
                        });
                    }
                    self.backoff * 2u32.pow(attempt - 1)
                }
            };
            tracing::debug!(
                path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying Qlik Cloud API call"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// `Retry-After` in seconds, capped.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// What went wrong, without the URL (the path is reported separately).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() || e.is_body() {
        "could not read the response".into()
    } else {
        "request failed".into()
    }
}

/// An id as one URL path segment: anything but `[A-Za-z0-9._-]` is percent-encoded, so an id
/// from an event can never change the path.
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.') && !(id == "." || id == "..")
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(
            segment("673d9f1c2a4b5c6d7e8f9012"),
            "673d9f1c2a4b5c6d7e8f9012"
        );
        assert_eq!(segment("4f2c9d1e-7a6b-4c3d"), "4f2c9d1e-7a6b-4c3d");
        assert_eq!(segment("../../users/me"), "..%2F..%2Fusers%2Fme");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a?b#c"), "a%3Fb%23c");
        assert_eq!(segment("x y"), "x%20y");
    }

    #[test]
    fn a_kept_value_is_reused_until_it_is_too_old_and_the_number_kept_is_bounded() {
        let memo = Memo::<u32>::default();
        assert_eq!(memo.get("a"), None);
        memo.put("a", &1);
        assert_eq!(memo.get("a"), Some(1));
        // Looked up longer than KEEP_FOR after it was stored: not used.
        let stored = Instant::now();
        assert_eq!(
            memo.get_at("a", stored + KEEP_FOR - Duration::from_secs(1)),
            Some(1)
        );
        assert_eq!(
            memo.get_at("a", stored + KEEP_FOR + Duration::from_secs(1)),
            None
        );
        for i in 0..(KEEP_MAX as u32 * 3) {
            memo.put(&i.to_string(), &i);
        }
        assert!(memo.entries.lock().unwrap().len() <= KEEP_MAX);
        let last = KEEP_MAX as u32 * 3 - 1;
        assert_eq!(memo.get(&last.to_string()), Some(last));
    }

    #[tokio::test]
    async fn a_failed_lookup_is_not_kept() {
        let memo = Memo::<u32>::default();
        let failed = memo
            .or_fetch("a", async {
                Err(ApiError::Status {
                    path: "/x".into(),
                    status: 500,
                })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(memo.get("a"), None);
        assert_eq!(memo.or_fetch("a", async { Ok(7) }).await, Ok(7));
        assert_eq!(memo.or_fetch("a", async { Ok(8) }).await, Ok(7), "kept");
    }
}
