//! Counters for `GET /metrics`, in Prometheus' text format.
//!
//! Why a process-wide registry: every part of the listener counts something, and threading a
//! handle through all of them would add noise for no gain. Counting is a relaxed atomic add
//! (or a short lock for labelled counters), never I/O.

use crate::config::ChannelKind;
use crate::journal::DeliveryState;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct Metrics {
    pub events_received: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_rejected: AtomicU64,
    pub messages_invalid: AtomicU64,
    pub qlik_api_calls: AtomicU64,
    pub qlik_api_errors: AtomicU64,
    qlik_api_micros: AtomicU64,
    pub reconcile_runs: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub reconcile_found: AtomicU64,
    /// (channel kind, delivery state) → count.
    alerts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// task start outcome → count.
    tasks: Mutex<BTreeMap<&'static str, u64>>,
    /// API publishes: outcome → count.
    api_publishes: Mutex<BTreeMap<&'static str, u64>>,
    /// The watched webhook per tenant: what is wrong with it (`None`: healthy).
    webhooks: Mutex<BTreeMap<String, Option<String>>>,
}

/// How a task start request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskMetric {
    Started,
    NotStarted,
    Failed,
    /// Not in `taskAllowList`.
    Refused,
    /// Not a task-start payload.
    Invalid,
}

impl TaskMetric {
    fn label(self) -> &'static str {
        match self {
            TaskMetric::Started => "started",
            TaskMetric::NotStarted => "not_started",
            TaskMetric::Failed => "failed",
            TaskMetric::Refused => "refused",
            TaskMetric::Invalid => "invalid",
        }
    }
}

/// How a `PUT /v4/mqttpublishmessage` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMetric {
    Published,
    Unavailable,
    Unauthorized,
    Refused,
}

impl PublishMetric {
    fn label(self) -> &'static str {
        match self {
            PublishMetric::Published => "published",
            PublishMetric::Unavailable => "unavailable",
            PublishMetric::Unauthorized => "unauthorized",
            PublishMetric::Refused => "refused",
        }
    }
}

pub static METRICS: Metrics = Metrics {
    events_received: AtomicU64::new(0),
    events_duplicate: AtomicU64::new(0),
    events_rejected: AtomicU64::new(0),
    messages_invalid: AtomicU64::new(0),
    qlik_api_calls: AtomicU64::new(0),
    qlik_api_errors: AtomicU64::new(0),
    qlik_api_micros: AtomicU64::new(0),
    reconcile_runs: AtomicU64::new(0),
    reconcile_failures: AtomicU64::new(0),
    reconcile_found: AtomicU64::new(0),
    alerts: Mutex::new(BTreeMap::new()),
    tasks: Mutex::new(BTreeMap::new()),
    api_publishes: Mutex::new(BTreeMap::new()),
    webhooks: Mutex::new(BTreeMap::new()),
};

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(0) += 1;
}

impl Metrics {
    pub fn qlik_api_call(&self, elapsed: std::time::Duration, ok: bool) {
        inc(&self.qlik_api_calls);
        if !ok {
            inc(&self.qlik_api_errors);
        }
        self.qlik_api_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// A delivery's final state, counted by kind of channel (`webhook-2` counts as `webhook`).
    pub fn alert(&self, kind: ChannelKind, state: DeliveryState) {
        bump(&self.alerts, (kind.as_str(), state.as_str()));
    }

    /// The watched webhook's latest health, for `/metrics` and `/readyz`.
    pub fn webhook_health(&self, tenant: &str, health: &crate::watchdog::Health, name: &str) {
        self.webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), health.problem(name));
    }

    /// What is wrong with the watched webhooks, one line per tenant.
    pub fn webhook_problems(&self) -> Vec<String> {
        self.webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(tenant, problem)| {
                problem.as_ref().map(|p| format!("tenant {tenant}: {p}"))
            })
            .collect()
    }

    pub fn task(&self, outcome: TaskMetric) {
        bump(&self.tasks, outcome.label());
    }

    pub fn api_publish(&self, outcome: PublishMetric) {
        bump(&self.api_publishes, outcome.label());
    }

    /// The text exposition; `brokers` are (name, connected).
    pub fn render(&self, brokers: &[(&str, bool)]) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "qlik_listener_events_received_total",
            "Events recorded in the journal.",
            get(&self.events_received),
        );
        counter(
            "qlik_listener_events_duplicate_total",
            "Events delivered again and not handled twice.",
            get(&self.events_duplicate),
        );
        counter(
            "qlik_listener_events_rejected_total",
            "Events whose qlik-signature did not verify.",
            get(&self.events_rejected),
        );
        counter(
            "qlik_listener_messages_invalid_total",
            "Messages that were not Qlik Cloud events.",
            get(&self.messages_invalid),
        );
        counter(
            "qlik_listener_qlik_api_calls_total",
            "Calls to the Qlik Cloud REST API, retries included.",
            get(&self.qlik_api_calls),
        );
        counter(
            "qlik_listener_qlik_api_errors_total",
            "Qlik Cloud API calls that failed.",
            get(&self.qlik_api_errors),
        );
        counter(
            "qlik_listener_reconcile_runs_total",
            "Reconciliation runs with Qlik Cloud's reloads API that completed.",
            get(&self.reconcile_runs),
        );
        counter(
            "qlik_listener_reconcile_failures_total",
            "Reconciliation runs that failed (the API could not be read).",
            get(&self.reconcile_failures),
        );
        counter(
            "qlik_listener_reconcile_found_total",
            "Failed reloads found by reconciliation that never arrived over the webhook.",
            get(&self.reconcile_found),
        );
        let seconds = get(&self.qlik_api_micros) as f64 / 1e6;
        let _ = write!(
            out,
            "# HELP qlik_listener_qlik_api_seconds_total Time spent in Qlik Cloud API calls.\n# TYPE qlik_listener_qlik_api_seconds_total counter\nqlik_listener_qlik_api_seconds_total {seconds}\n"
        );
        let _ = writeln!(out, "# HELP qlik_listener_alerts_total Alert deliveries by channel and final state.\n# TYPE qlik_listener_alerts_total counter");
        for ((channel, state), n) in self.alerts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "qlik_listener_alerts_total{{channel=\"{channel}\",state=\"{state}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP qlik_listener_tasks_total Qlik Sense task start requests by outcome.\n# TYPE qlik_listener_tasks_total counter");
        for (outcome, n) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "qlik_listener_tasks_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP qlik_listener_api_publishes_total PUT /v4/mqttpublishmessage by outcome.\n# TYPE qlik_listener_api_publishes_total counter");
        for (outcome, n) in self
            .api_publishes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "qlik_listener_api_publishes_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP qlik_listener_webhook_healthy Whether the watched Qlik Cloud webhook is enabled and delivering.\n# TYPE qlik_listener_webhook_healthy gauge");
        for (tenant, problem) in self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "qlik_listener_webhook_healthy{{tenant=\"{tenant}\"}} {}",
                u8::from(problem.is_none())
            );
        }
        let _ = writeln!(out, "# HELP qlik_listener_broker_connected Whether the broker connection is up.\n# TYPE qlik_listener_broker_connected gauge");
        for (name, up) in brokers {
            let _ = writeln!(
                out,
                "qlik_listener_broker_connected{{broker=\"{name}\"}} {}",
                u8::from(*up)
            );
        }
        out
    }
}
