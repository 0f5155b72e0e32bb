//! `qlik-listener`: the on-prem half of the relay.
//!
//! It subscribes to the broker the forwarder publishes to ([`subscriber`]), records every event
//! in a SQLite [`journal`] before acknowledging it, and turns reload failures into alert data
//! ([`pipeline`], [`enrich`], [`qlik_api`], [`template`]), storing script logs on disk
//! ([`script_log`]). The configuration is Butler's YAML ([`config`]).

pub mod config;
pub mod enrich;
pub mod journal;
pub mod notify;
pub mod pipeline;
pub mod qlik_api;
pub mod script_log;
pub mod subscriber;
pub mod template;

use anyhow::Context as _;
use config::{Config, TenantRef};
use pipeline::{Pipeline, Tenant};
use std::sync::Arc;

/// Connects the tenants' API clients, resolving tenant host names to ids.
pub async fn tenants(config: &Config) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::new();
    for t in &config.tenants {
        let api = qlik_api::QlikApi::new(t.tenant_url.clone(), t.token.clone())?;
        let id = match &t.id {
            TenantRef::Id(id) => id.clone(),
            TenantRef::Host(host) => {
                let me = api.me().await.with_context(|| {
                    format!("{}.id: cannot resolve tenant host {host} to its id", t.path)
                })?;
                let id = me.tenant_id.with_context(|| {
                    format!(
                        "{}.id: /api/v1/users/me did not say the tenantId of {host}",
                        t.path
                    )
                })?;
                tracing::info!(host = %host, tenant_id = %id, "tenant host name resolved");
                id
            }
        };
        tenants.push(Tenant::new(id, t.clone(), api));
    }
    Ok(tenants)
}

/// Runs the listener until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let journal = journal::Journal::open(&config.journal_path).await?;
    let tenants = tenants(&config).await?;
    let wants_mqtt = config
        .tenants
        .iter()
        .flat_map(|t| &t.channels)
        .any(|c| c.topic.is_some());
    let alert_publisher: Option<Arc<dyn relay_mqtt::Publish>> = if wants_mqtt {
        Some(Arc::new(subscriber::alert_publisher(&config.broker)?))
    } else {
        None
    };
    let pipeline = Pipeline::new(&config, journal, tenants, alert_publisher)?;
    let (messages, _connected) = subscriber::subscribe(&config.broker, &config.subscription_root)?;
    tracing::info!(
        broker = %format!("{}:{}", config.broker.host, config.broker.port),
        subscription = %config.subscription_root,
        journal = %config.journal_path.display(),
        "listener started"
    );
    let receive = tokio::spawn(pipeline.clone().receive(messages));
    let work = tokio::spawn(pipeline.clone().work());
    let prune = tokio::spawn(Arc::clone(&pipeline).prune(config.retention_days));
    shutdown.await;
    receive.abort();
    work.abort();
    prune.abort();
    tracing::info!("listener stopped");
    Ok(())
}
