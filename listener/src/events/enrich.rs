//! Enrichment of a reload failure from the Qlik Cloud REST API: the reload (trigger, times,
//! error), the script log, the app (name, description, owner), its tags and the owner.
//!
//! Promise: the lookups run concurrently and each failure is recorded in
//! [`Enrichment::errors`]; a failed lookup degrades the alert, it never drops it.

use crate::qlik_api::{ApiError, AppInfo, AppItem, QlikApi, ReloadInfo, UserInfo};
use qlik_events::{Event, Reload};

/// What the Qlik Cloud API told about an event; `None` where a call failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub reload: Option<ReloadInfo>,
    pub app: Option<AppInfo>,
    pub owner: Option<UserInfo>,
    /// The app's item: tags and file size.
    pub item: Option<AppItem>,
    pub script_log: Option<String>,
    /// One line per failed lookup, e.g. `GET /api/v1/apps/…: HTTP 404`.
    pub errors: Vec<String>,
}

/// `spool`: where to write the whole script log as it downloads (see [`QlikApi::script_log`]).
pub async fn enrich(
    api: &QlikApi,
    event: &Event<'_>,
    reload: &Reload,
    spool: Option<&std::path::Path>,
) -> Enrichment {
    let mut errors = Vec::new();
    let app_id = reload.app_id.as_deref();
    let reload_id = reload.reload_id.as_deref();

    let (info, log, app, item) = tokio::join!(
        optional(reload_id.map(|r| api.reload(r))),
        optional(
            app_id
                .zip(reload_id)
                .map(|(a, r)| api.script_log(a, r, spool))
        ),
        optional(app_id.map(|a| api.app(a))),
        optional(app_id.map(|a| api.app_item(a))),
    );
    let reload_info = keep(info, &mut errors);
    let script_log = keep(log, &mut errors);
    let app = keep(app, &mut errors);
    let item = keep(item, &mut errors);

    let owner_id = app
        .as_ref()
        .and_then(|a| a.owner_id.clone())
        .or_else(|| event.owner_id.as_deref().map(str::to_owned));
    let owner = keep(
        optional(owner_id.as_deref().map(|o| api.user(o))).await,
        &mut errors,
    );
    if app_id.is_none() {
        errors.push("the event names no app".to_owned());
    }
    if reload_id.is_none() {
        errors.push("the event names no reload".to_owned());
    }
    Enrichment {
        reload: reload_info,
        app,
        owner,
        item,
        script_log,
        errors,
    }
}

async fn optional<T>(
    call: Option<impl std::future::Future<Output = Result<T, ApiError>>>,
) -> Option<Result<T, ApiError>> {
    match call {
        Some(call) => Some(call.await),
        None => None,
    }
}

fn keep<T>(result: Option<Result<T, ApiError>>, errors: &mut Vec<String>) -> Option<T> {
    match result? {
        Ok(value) => Some(value),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

/// Where script logs are stored, when they are.
pub struct LogStore<'a> {
    pub dir: &'a std::path::Path,
    pub layout: crate::script_log::Layout,
}

/// [`enrich`], with the script log streamed to its file under `store` as it downloads (never
/// whole in memory) and committed only when the download completed (no half file is left).
/// Lookups that failed and a log that could not be stored are logged at warn (`event_id`
/// names the event); the alert goes out without them.
pub async fn enrich_and_store(
    event_id: &str,
    api: &QlikApi,
    event: &Event<'_>,
    reload: &Reload,
    store: Option<LogStore<'_>>,
) -> Enrichment {
    use crate::script_log;
    let spool = store.and_then(|store| {
        let of = script_log::LogOf {
            tenant_id: &event.tenant_id,
            time: event
                .timestamp()
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
            app_id: reload.app_id.as_deref(),
            reload_id: reload.reload_id.as_deref(),
        };
        script_log::spool(store.dir, store.layout, &of)
            .map_err(|e| tracing::warn!(event_id, error = %e, "script log not stored"))
            .ok()
    });
    let enrichment = enrich(api, event, reload, spool.as_ref().map(|s| s.tmp.as_path())).await;
    for error in &enrichment.errors {
        tracing::warn!(event_id, error = %error, "Qlik Cloud lookup failed; the alert will lack it");
    }
    if let Some(spool) = spool {
        let downloaded = enrichment.script_log.is_some();
        let stored = tokio::task::spawn_blocking(move || {
            if downloaded {
                script_log::commit(&spool).map(Some)
            } else {
                // A download that failed part-way leaves no half file behind.
                let _ = std::fs::remove_file(&spool.tmp);
                Ok(None)
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        match stored {
            Ok(Some(path)) => tracing::info!(event_id, path = %path.display(), "script log stored"),
            Ok(None) => {}
            Err(e) => tracing::warn!(event_id, error = %e, "script log not stored"),
        }
    }
    enrichment
}
