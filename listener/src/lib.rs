//! `qlik-listener`: the on-prem half of the relay.
//!
//! Three subsystems around one journal, and a safety net beside them:
//! - **events** (`events`): the durable subscription (`subscriber`) hands every Qlik Cloud
//!   event to the pipeline (`events::pipeline`: intake, worker, handler), which records it in
//!   the [`journal`] before acknowledging it, decides whether it alerts (`events::one_alert`),
//!   enriches reload failures from the Qlik Cloud API (`qlik_api`; `events::enrich`), stores
//!   their script logs (`script_log`: lines, head and tail, the field limits, storing on
//!   disk) and builds the alert data (`events::alert_data`, in Butler's template variables;
//!   `events::local_time` for its times);
//! - **alerts** (`notify`): one delivery per channel and event, retries and rules; each channel
//!   a component in `notify::channel` (`teams`, `slack`, `webhook`, `email`, `mqtt`, `console`,
//!   `file`: its templates, limits, rendering and sending; `http` the client they share), the
//!   rendering they share in `notify::render`, alerts about the safety net itself in
//!   `notify::operator`;
//! - **Butler's integration** (`butler`): task starts through the QRS API (`butler::qrs`,
//!   `butler::tasks`) and the HTTP API (`butler::rest`);
//! - **the safety net**: reconciliation with the reloads API (`events::reconcile`) and the
//!   webhook watchdog (`watchdog`), which report to the operator through [`run`]'s `SafetyNet`.
//!
//! Around them: the configuration, Butler's YAML read into types ([`config`]); the journal's
//! seam and its backends: SQLite (`journal::sqlite`, one listener per file: `journal::lock`) and
//! PostgreSQL shared by two or three listeners (`journal::postgres`, its election in
//! `journal::postgres::role`); `group`: the listeners sharing a journal (heartbeat, the
//! singleton role, reconciliation, the watchdog and pruning run only on its holder);
//! the Qlik Cloud API client with its paging (`qlik_api::pages`) and webhooks API
//! (`qlik_api::webhooks`); `/healthz`, `/readyz` and `/metrics` (`operations`), counting in
//! `metrics`; [`cli`] for the binary's other subcommands (history, preview, webhook, service,
//! `journal migrate`, the embedded broker). `main.rs` only parses arguments and dispatches.

mod alert;
mod butler;
pub mod cli;
pub mod config;
mod events;
mod group;
pub mod journal;
mod metrics;
mod notify;
mod operations;
mod qlik_api;
mod script_log;
mod subscriber;
mod watchdog;

pub use notify::templates::{check as check_templates, Findings as TemplateFindings};

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
        let refused = match &me {
            Err(e) if e.is_key_refused() => Some(format!(
                "Qlik Cloud refused the API key of {key} (wrong, expired or revoked): {} and put it there",
                qlik_api::NEW_KEY
            )),
            Err(e) => {
                tracing::warn!(tenant = %t.path, error = %e, "cannot reach the Qlik Cloud API to check the API key; carrying on");
                None
            }
            Ok(_) => None,
        };
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
        if let Some(problem) = refused {
            tracing::error!("{problem}");
            operations::PROBLEMS.set(&format!("api key {id}"), problem, None);
        }
        tenants.push(Tenant::new(id, t.clone(), api));
    }
    Ok(tenants)
}

/// What the safety net (the webhook watchdog, reconciliation) reports: log lines, operator
/// alerts on the tenant's channels, `/readyz`, and what the pipeline learns of the webhook.
struct SafetyNet {
    pipeline: Arc<Pipeline>,
    /// Tenants whose API key Qlik Cloud refuses now (one alert when it starts, one when it ends).
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl SafetyNet {
    fn alert(&self, tenant_id: &str, notice: notify::operator::Notice) {
        let pipeline = self.pipeline.clone();
        let tenant_id = tenant_id.to_owned();
        tokio::spawn(async move { pipeline.operator_alert(&tenant_id, notice).await });
    }
}

/// What to do about a webhook in this state.
fn webhook_action(health: &watchdog::Health) -> &'static str {
    use watchdog::Health;
    match health {
        Health::Healthy => "Nothing. Failures of the time it was not delivering were found by reconciliation; `qlik-listener webhook resend` resends what Qlik kept of the failed deliveries.",
        Health::Disabled(_) => "Find why deliveries failed (the forwarder's log, `qlik-listener webhook failed-deliveries`), then run `qlik-listener webhook enable` and `qlik-listener webhook resend`.",
        Health::Missing | Health::NoReloadEvents(_) | Health::WrongUrl(_) => "Run `qlik-listener webhook register --url <the forwarder's URL>` to create or repair it, or correct it in the Management Console (Webhooks).",
        Health::Ambiguous(_) => "Set Butler.qlikCloudListener.webhookWatch.expectedUrl to the forwarder's URL (or webhookWatch.id), or delete the extra webhooks of that name.",
        Health::Failing(_) => "Check the forwarder (its log, its URL from outside) and the broker; `qlik-listener webhook failed-deliveries` shows what Qlik saw.",
    }
}

impl watchdog::Report for SafetyNet {
    fn changed(&self, tenant_id: &str, webhook: &str, health: &watchdog::Health, changes: u32) {
        let problem = health.problem(webhook);
        let flapped = if changes > 1 {
            format!(" It changed state {changes} times since the last alert about it (at most two alerts about it per webhookWatch.minAlertIntervalSeconds).")
        } else {
            String::new()
        };
        let (title, what) = match &problem {
            Some(p) => {
                tracing::error!(tenant = tenant_id, state = %health.key(), changes, "{p}");
                (
                    "Qlik Cloud webhook needs attention",
                    format!("{p}.{flapped}"),
                )
            }
            None => {
                tracing::info!(
                    tenant = tenant_id,
                    webhook,
                    changes,
                    "the Qlik Cloud webhook is enabled and delivering"
                );
                (
                    "Qlik Cloud webhook healthy again",
                    format!("The webhook {webhook} is enabled and delivering again.{flapped}"),
                )
            }
        };
        self.alert(
            tenant_id,
            notify::operator::Notice {
                alert_id: format!("webhook-{tenant_id}-{}-{}", health.key(), journal::now_ms()),
                problem: problem.is_some(),
                title,
                what,
                action: webhook_action(health).to_owned(),
                subject: format!("the webhook {webhook}"),
                page: notify::operator::Page::Webhooks,
            },
        );
    }

    fn webhook_seen(&self, tenant_id: &str, hook: &qlik_api::webhooks::Webhook) {
        self.pipeline
            .webhook_sends_final(tenant_id, hook.sends_final_outcomes());
    }

    fn api_key(&self, tenant_id: &str, refused: Option<String>) {
        let was = {
            let mut set = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            match refused {
                Some(_) => !set.insert(tenant_id.to_owned()),
                None => set.remove(tenant_id),
            }
        };
        let subject = format!("the API key of tenant {tenant_id} (its auth.jwt.token)");
        match refused {
            Some(problem) if !was => {
                tracing::error!(tenant = tenant_id, "{problem}");
                operations::PROBLEMS.set(&format!("api key {tenant_id}"), problem.clone(), None);
                self.alert(
                    tenant_id,
                    notify::operator::Notice {
                        alert_id: format!("api-key-{tenant_id}-refused-{}", journal::now_ms()),
                        problem: true,
                        title: "Qlik Cloud refuses the listener's API key",
                        what: problem,
                        action: format!(
                            "The listener's API key: {}, put it where the tenant's auth.jwt.token reads it, and restart the listener.",
                            qlik_api::NEW_KEY
                        ),
                        subject,
                        page: notify::operator::Page::ApiKeys,
                    },
                );
            }
            None if was => {
                tracing::info!(tenant = tenant_id, "Qlik Cloud accepts the API key again");
                operations::PROBLEMS.clear(&format!("api key {tenant_id}"));
                self.alert(
                    tenant_id,
                    notify::operator::Notice {
                        alert_id: format!("api-key-{tenant_id}-accepted-{}", journal::now_ms()),
                        problem: false,
                        title: "Qlik Cloud accepts the listener's API key again",
                        what: format!("Qlik Cloud accepts the API key of tenant {tenant_id} again: reconciliation and the webhook watchdog run again, and alerts carry app details."),
                        action: "Nothing; reconciliation catches up on failures of the time the key was refused.".into(),
                        subject,
                        page: notify::operator::Page::ApiKeys,
                    },
                );
            }
            _ => {}
        }
    }
}

/// The topics the listener publishes itself: its MQTT alert channels, Butler's status and
/// task results.
fn own_topics(config: &Config) -> Vec<String> {
    let mut own: Vec<String> = config
        .tenants
        .iter()
        .flat_map(|t| &t.channels)
        .filter_map(|c| match &c.target {
            config::Target::Mqtt { topic } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    if let Some(butler) = &config.butler_mqtt {
        own.push(butler.status_topic.clone());
        own.push(butler.task_result_topic.clone());
    }
    own
}

/// Opens the configured journal: the shared one in PostgreSQL, or the SQLite file with its
/// lock (one listener per file: a second one would share the broker session and alert twice).
async fn open_journal(
    config: &Config,
) -> anyhow::Result<(journal::Journal, Option<journal::InstanceLock>)> {
    match &config.shared_journal {
        Some(shared) => {
            // A database that cannot be reached yet (PostgreSQL starting after a reboot, the
            // network) is waited for, not a crash loop; a newer schema is final.
            let mut wait = std::time::Duration::from_secs(1);
            let mut said = None::<std::time::Instant>;
            loop {
                match journal::Journal::open_postgres(&shared.settings()).await {
                    Ok(journal) => {
                        if said.is_some() {
                            tracing::info!(journal = %shared.url, "the shared journal is reachable");
                        }
                        return Ok((journal, None));
                    }
                    Err(e @ journal::JournalError::Newer { .. }) => {
                        return Err(e).context("Butler.qlikCloudListener.journal.url");
                    }
                    Err(e) => {
                        if said.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(300))
                        {
                            tracing::error!(journal = %shared.url, error = %e, "cannot open the shared journal (Butler.qlikCloudListener.journal.url); retrying until it can be reached");
                            said = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        }
        None => {
            // The same words as `check-config`, naming the key (not SQLite's "unable to open
            // database file").
            if let Some(problem) = config.local_problems().into_iter().next() {
                anyhow::bail!("{problem}");
            }
            let lock = journal::InstanceLock::acquire(&config.journal_path)?;
            Ok((
                journal::Journal::open(&config.journal_path).await?,
                Some(lock),
            ))
        }
    }
}

/// How long a stopping listener waits for alert requests under way (below systemd's and the
/// Windows service manager's stop time-outs).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs the listener until `shutdown` completes, then stops as [`DRAIN`] says.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (journal, _instance) = open_journal(&config).await?;
    let templates = check_templates(&config);
    for problem in templates.errors.iter().chain(&templates.warnings) {
        tracing::warn!("{problem}");
    }
    let lease = config
        .shared_journal
        .as_ref()
        .map_or(std::time::Duration::from_secs(30), |s| {
            std::time::Duration::from_secs(s.lease_secs)
        });
    let group = Arc::new(group::Group::join(&journal, lease));
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
    let (pipeline, worker) =
        Pipeline::new(&config, journal.clone(), tenants, events_publisher.clone())?;
    let (messages, events_connected) =
        subscriber::subscribe(&config.broker, &config.subscription_root, None)?;
    tracing::info!(
        broker = %format!("{}:{}", config.broker.host, config.broker.port),
        client_id = %config.broker.client_id,
        subscription = %config.subscription_root,
        journal = %cli::journal_shown(&config),
        instance = group.instance().unwrap_or("-"),
        "listener started"
    );
    // What `check-config --online` checks, said once in the log (it only reports).
    tokio::spawn(cli::online::at_start(
        config.clone(),
        events_connected.clone(),
    ));
    let receiving = tokio::spawn(pipeline.clone().receive(messages));
    let prune = pipeline.clone();
    let mut tasks = vec![
        tokio::spawn(worker.run(pipeline.clone())),
        group.singleton(move || prune.clone().prune()),
        tokio::spawn(journal.clone().watch()),
    ];
    // Is the webhook that feeds the forwarder still enabled and delivering?
    let report: Arc<dyn watchdog::Report> = Arc::new(SafetyNet {
        pipeline: pipeline.clone(),
        refused: Default::default(),
    });
    if let Some(watch) = &config.webhook_watch {
        for (tenant_id, api) in pipeline.tenant_apis() {
            let (journal, watch, report) =
                (pipeline.journal().clone(), watch.clone(), report.clone());
            tasks.push(group.singleton(move || {
                watchdog::run(
                    journal.clone(),
                    tenant_id.clone(),
                    api.clone(),
                    watch.clone(),
                    report.clone(),
                )
            }));
        }
    }
    // Failed reloads Qlik Cloud knows of that never arrived over the webhook.
    if let Some(settings) = config.reconcile {
        for (tenant_id, api) in pipeline.tenant_apis() {
            let (found, report) = (pipeline.clone(), report.clone());
            tasks.push(group.singleton(move || {
                let found = found.clone();
                events::reconcile::run(
                    found.journal().clone(),
                    tenant_id.clone(),
                    api.clone(),
                    settings,
                    report.clone(),
                    move |entry| found.reconciled(entry),
                )
            }));
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
        let handler = Arc::new(tasks::Tasks::new(
            butler.clone(),
            qrs,
            publisher.clone(),
            &journal,
        ));
        tasks.push(tokio::spawn(handler.run(messages)));
        brokers.push(("butler".to_owned(), connected));
        butler_publisher = Some(publisher);
    }

    let operations = Arc::new(operations::Operations {
        journal: journal.clone(),
        brokers,
        group: group.clone(),
    });
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
            publisher,
            operations: operations.clone(),
            events_filter: config.subscription_root.clone(),
            own_topics: own_topics(&config),
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
        tasks.push(tokio::spawn(async move {
            if let Err(e) = operations::serve(listener, operations).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }

    shutdown.await;
    // Stop taking new work: no more messages are recorded (those not acknowledged are
    // delivered again at the next start), no new event or alert attempt starts; alert requests
    // under way finish and are recorded, within a bound.
    receiving.abort();
    tracing::info!(
        bound_seconds = DRAIN.as_secs(),
        "stopping: letting alerts under way finish"
    );
    let left = pipeline.drain(DRAIN).await;
    if left > 0 {
        tracing::warn!(
            events = left,
            "stopped with events still being handled; they resume at the next start"
        );
    }
    for task in tasks {
        task.abort();
    }
    group.leave().await;
    tracing::info!("listener stopped");
    Ok(())
}
