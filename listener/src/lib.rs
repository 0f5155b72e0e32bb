//! `qlik-listener`: the on-prem half of the relay.
//!
//! Three subsystems around one journal:
//! - **events** ([`events`]): the durable subscription ([`subscriber`]) hands every Qlik Cloud
//!   event to the pipeline, which records it in the SQLite [`journal`] before acknowledging it,
//!   enriches reload failures from the Qlik Cloud API ([`qlik_api`]), stores their script logs and
//!   builds the alert data;
//! - **alerts** (`notify`): one delivery per channel and event, each transport in its own file;
//! - **Butler's integration** (`butler`): task starts through the QRS API and the HTTP API.
//!
//! The configuration is Butler's YAML ([`config`]); [`cli`] holds what the binary's other
//! subcommands do (history, webhook, the embedded broker). `metrics` counts for `/metrics`.

mod butler;
pub mod cli;
pub mod config;
mod events;
pub mod journal;
mod metrics;
mod notify;
mod qlik_api;
mod subscriber;
mod watchdog;

/// The parsers the fuzz targets exercise.
pub mod parse {
    pub use crate::butler::qrs::{parse_request, TaskRequest};
    pub use crate::butler::rest::parse_publish;
}

use anyhow::Context as _;
use butler::{qrs, rest, tasks};
use config::{Config, TenantRef};
use events::pipeline::{Pipeline, Tenant};
use std::sync::Arc;

/// Connects the tenants' API clients, checks each API key with `GET /api/v1/users/me` and
/// resolves tenant host names to ids. A key Qlik Cloud refuses is said at once, naming its
/// setting, and stays in `/readyz` (alerts would lack enrichment and reconciliation would fail);
/// an API that cannot be reached is only a warning (it may be back by the first failure).
async fn tenants(config: &Config) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::new();
    for t in &config.tenants {
        let api = qlik_api::QlikApi::new(t.tenant_url.clone(), t.token.clone())?;
        let key = format!("{}.auth.jwt.token", t.path);
        let me = api.me().await;
        if let Err(qlik_api::ApiError::Status {
            status: 401 | 403, ..
        }) = &me
        {
            let problem = format!(
                "Qlik Cloud refused the API key of {key} (wrong, expired or revoked: create a new one in the tenant's profile settings, API keys)"
            );
            metrics::METRICS.api_key_problem(&t.path, Some(problem.clone()));
            tracing::error!("{problem}");
        } else if let Err(e) = &me {
            tracing::warn!(tenant = %t.path, error = %e, "cannot reach the Qlik Cloud API to check the API key; carrying on");
        }
        let id = match &t.id {
            TenantRef::Id(id) => id.clone(),
            TenantRef::Host(host) => {
                let me = me.with_context(|| {
                    format!("{}.id: cannot resolve tenant host {host} to its id (check {key} and the network)", t.path)
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

/// The webhook watchdog's reports: a log line and an alert on the tenant's channels.
struct WatchReport(Arc<Pipeline>);

impl watchdog::Report for WatchReport {
    fn changed(&self, tenant_id: &str, health: &watchdog::Health, problem: Option<String>) {
        let (title, what) = match &problem {
            Some(p) => {
                tracing::error!(tenant = tenant_id, state = %health.key(), "{p}");
                ("Qlik Cloud webhook needs attention", p.clone())
            }
            None => {
                tracing::info!(
                    tenant = tenant_id,
                    "the Qlik Cloud webhook is enabled and delivering"
                );
                (
                    "Qlik Cloud webhook healthy again",
                    "The webhook is enabled and delivering again.".to_owned(),
                )
            }
        };
        let alert_id = format!("webhook-{tenant_id}-{}-{}", health.key(), journal::now_ms());
        let pipeline = self.0.clone();
        let tenant_id = tenant_id.to_owned();
        tokio::spawn(async move {
            pipeline
                .operator_alert(&tenant_id, &alert_id, title, &what)
                .await
        });
    }
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
        .any(|c| matches!(c.target, config::Target::Mqtt { .. }));
    let events_publisher: Option<Arc<dyn relay_mqtt::Publish>> =
        if wants_mqtt || config.rest.is_some() {
            Some(Arc::new(subscriber::publisher(&config.broker, "alerts")?))
        } else {
            None
        };
    let pipeline = Pipeline::new(&config, journal.clone(), tenants, events_publisher.clone())?;
    let (messages, events_connected) =
        subscriber::subscribe(&config.broker, &config.subscription_root, None)?;
    tracing::info!(
        broker = %format!("{}:{}", config.broker.host, config.broker.port),
        subscription = %config.subscription_root,
        journal = %config.journal_path.display(),
        "listener started"
    );
    let mut tasks = vec![
        tokio::spawn(pipeline.clone().receive(messages)),
        tokio::spawn(pipeline.clone().work()),
        tokio::spawn(Arc::clone(&pipeline).prune()),
        tokio::spawn(journal.clone().watch()),
    ];
    // Is the webhook that feeds the forwarder still enabled and delivering?
    if let Some(watch) = &config.webhook_watch {
        let report: Arc<dyn watchdog::Report> = Arc::new(WatchReport(pipeline.clone()));
        for (tenant_id, api) in pipeline.tenant_apis() {
            tasks.push(tokio::spawn(watchdog::run(
                pipeline.journal().clone(),
                tenant_id,
                api,
                watch.clone(),
                report.clone(),
            )));
        }
    }
    // Failed reloads Qlik Cloud knows of that never arrived over the webhook.
    if let Some(settings) = config.reconcile {
        for (tenant_id, api) in pipeline.tenant_apis() {
            let found = pipeline.clone();
            tasks.push(tokio::spawn(events::reconcile::run(
                pipeline.journal().clone(),
                tenant_id,
                api,
                settings,
                move |entry| found.reconciled(entry),
            )));
        }
    }
    let mut brokers = vec![("qlik-cloud-events".to_owned(), events_connected)];

    // Butler's MQTT integration: task starts in, status and results out.
    let mut butler_publisher: Option<Arc<dyn relay_mqtt::Publish>> = None;
    if let (Some(butler), Some(qrs_config)) = (&config.butler_mqtt, &config.qrs) {
        let qrs = qrs::Qrs::new(qrs_config)?;
        let publisher: Arc<dyn relay_mqtt::Publish> =
            Arc::new(subscriber::publisher(&butler.broker, "pub")?);
        let (messages, connected) = subscriber::subscribe(
            &butler.broker,
            &butler.subscription_root,
            Some(&butler.status_topic),
        )?;
        tracing::info!(
            broker = %format!("{}:{}", butler.broker.host, butler.broker.port),
            subscription = %butler.subscription_root,
            task_start_topic = %butler.task_start_topic,
            status_topic = %butler.status_topic,
            "Butler MQTT integration started"
        );
        let handler = Arc::new(tasks::Tasks::new(butler.clone(), qrs, publisher.clone()));
        tasks.push(tokio::spawn(handler.run(messages)));
        brokers.push(("butler".to_owned(), connected));
        butler_publisher = Some(publisher);
    }

    if let Some(rest_config) = &config.rest {
        let publisher = butler_publisher
            .or(events_publisher)
            .context("no broker to publish to")?;
        let tls = match &rest_config.tls {
            Some(files) => {
                let names = qlik_events::tls::SettingNames {
                    ca_file: "Butler.restServerConfig.tls.ca",
                    cert_file: "Butler.restServerConfig.tls.cert",
                    key_file: "Butler.restServerConfig.tls.key",
                };
                let config = qlik_events::tls::server_config(
                    &files.cert,
                    &files.key,
                    files.ca.as_deref(),
                    names,
                )?;
                Some(Arc::new(config))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind((rest_config.host.as_str(), rest_config.port))
            .await
            .with_context(|| {
                format!(
                    "Butler.restServerConfig: cannot listen on {}",
                    rest_config.address()
                )
            })?;
        let address = listener.local_addr().context("no local address")?;
        if !address.ip().is_loopback() && rest_config.bearer_token.is_none() {
            tracing::warn!(address = %address, "the API listens beyond loopback without a bearerToken: anyone who can reach it may publish");
        }
        let scheme = rest_config.scheme();
        println!("qlik-listener API on {scheme}://{address}");
        tracing::info!(address = %address, scheme, publish = rest_config.publish_enabled, "API listening");
        let api = Arc::new(rest::Api {
            config: rest_config.clone(),
            publisher: Some(publisher),
            journal: journal.clone(),
            brokers: brokers.clone(),
            events_filter: config.subscription_root.clone(),
        });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = rest::serve(listener, tls, api, std::future::pending()).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }

    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!("Butler.qlikCloudListener.metricsListen: cannot listen on {address}")
            })?;
        let address = listener.local_addr().context("no local address")?;
        println!("qlik-listener metrics on http://{address}/metrics");
        tracing::info!(address = %address, "metrics listening");
        // The HTTP API's health and metrics routes, without its publish endpoint.
        let api = Arc::new(rest::Api {
            config: crate::config::RestConfig::monitoring(address),
            publisher: None,
            journal,
            brokers,
            events_filter: config.subscription_root.clone(),
        });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = rest::serve(listener, None, api, std::future::pending()).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }

    shutdown.await;
    for task in tasks {
        task.abort();
    }
    tracing::info!("listener stopped");
    Ok(())
}
