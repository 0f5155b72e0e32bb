//! Counters for `GET /metrics`, in Prometheus' text format.
//!
//! Why a process-wide registry: every part of the listener counts something, and threading a
//! handle through all of them would add noise for no gain. Counting is a relaxed atomic add
//! (or a short lock for labelled counters), never I/O.

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
    /// Events from tenants that are not configured (recorded and skipped).
    pub events_unknown_tenant: AtomicU64,
    /// Seconds from the reload's end to an alert sent: counts per bucket of [`LATENCY_BUCKETS`]
    /// (not cumulative), the sum in milliseconds and the count.
    latency: Mutex<Latency>,
    /// (channel kind, delivery state) → count.
    alerts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// task start outcome → count.
    tasks: Mutex<BTreeMap<&'static str, u64>>,
    /// API publishes: outcome → count.
    api_publishes: Mutex<BTreeMap<&'static str, u64>>,
    /// Per tenant: reconciliation and the watched webhook.
    tenants: Mutex<BTreeMap<String, TenantMetrics>>,
}

/// Upper bounds (seconds) of the end-to-end latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

struct Latency {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum_ms: u64,
    count: u64,
}

/// What `/metrics` says per tenant.
#[derive(Default)]
struct TenantMetrics {
    /// Failed reloads found by reconciliation.
    reconcile_found: u64,
    /// When reconciliation last completed (unix seconds).
    reconciled_at: Option<i64>,
    /// Whether the watched webhook is healthy, once checked.
    webhook_healthy: Option<bool>,
    webhook_enabled: Option<bool>,
    /// Failed deliveries the watchdog has seen.
    webhook_failed_deliveries: u64,
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
    events_unknown_tenant: AtomicU64::new(0),
    latency: Mutex::new(Latency {
        buckets: [0; LATENCY_BUCKETS.len()],
        sum_ms: 0,
        count: 0,
    }),
    alerts: Mutex::new(BTreeMap::new()),
    tasks: Mutex::new(BTreeMap::new()),
    api_publishes: Mutex::new(BTreeMap::new()),
    tenants: Mutex::new(BTreeMap::new()),
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

    /// An alert was sent `latency` after the reload ended.
    pub fn alert_latency(&self, latency: std::time::Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            l.buckets[i] += 1;
        }
        l.sum_ms += latency.as_millis() as u64;
        l.count += 1;
    }

    /// A delivery's final state, counted by kind of channel (`webhook-2` counts as `webhook`).
    pub fn alert(&self, kind: &'static str, state: &'static str) {
        bump(&self.alerts, (kind, state));
    }

    fn tenant(&self, tenant: &str, change: impl FnOnce(&mut TenantMetrics)) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        change(tenants.entry(tenant.to_owned()).or_default());
    }

    /// A reconciliation run completed and found `found` missed reloads.
    pub fn reconciled(&self, tenant: &str, found: usize) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.tenant(tenant, |t| {
            t.reconcile_found += found as u64;
            t.reconciled_at = Some(now);
        });
    }

    /// The watched webhook's state: whether it is healthy and enabled, and how many failed
    /// deliveries were newly seen.
    pub fn webhook_health(
        &self,
        tenant: &str,
        healthy: bool,
        enabled: bool,
        new_failed_deliveries: u64,
    ) {
        self.tenant(tenant, |t| {
            t.webhook_healthy = Some(healthy);
            t.webhook_enabled = Some(enabled);
            t.webhook_failed_deliveries += new_failed_deliveries;
        });
    }

    pub fn task(&self, outcome: TaskMetric) {
        bump(&self.tasks, outcome.label());
    }

    pub fn api_publish(&self, outcome: PublishMetric) {
        bump(&self.api_publishes, outcome.label());
    }

    /// The text exposition; `brokers` are (name, connected); `journal_ok`: the journal takes
    /// writes and its file is in place; `backlog`: reload failures not yet alerted.
    pub fn render(
        &self,
        brokers: &[(&str, bool)],
        journal_ok: bool,
        backlog: Option<u64>,
    ) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "# HELP qlik_listener_build_info The running version.\n# TYPE qlik_listener_build_info gauge\nqlik_listener_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(n) = backlog {
            let _ = write!(
                out,
                "# HELP qlik_listener_backlog_events Reload failures recorded but not yet alerted on every channel.\n# TYPE qlik_listener_backlog_events gauge\nqlik_listener_backlog_events {n}\n"
            );
        }
        {
            let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            let name = "qlik_listener_alert_latency_seconds";
            let _ = write!(
                out,
                "# HELP {name} From the reload's end (as Qlik reports it) to an alert sent.\n# TYPE {name} histogram\n"
            );
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(l.buckets) {
                cumulative += n;
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", l.count);
            let _ = writeln!(out, "{name}_sum {}", l.sum_ms as f64 / 1000.0);
            let _ = writeln!(out, "{name}_count {}", l.count);
        }
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
            "qlik_listener_events_unknown_tenant_total",
            "Events from tenants that are not configured (recorded and skipped).",
            get(&self.events_unknown_tenant),
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
        {
            let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            let mut family =
                |name: &str,
                 kind: &str,
                 help: &str,
                 value: &dyn Fn(&TenantMetrics) -> Option<String>| {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                    for (tenant, t) in tenants.iter() {
                        if let Some(v) = value(t) {
                            let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {v}");
                        }
                    }
                };
            family(
                "qlik_listener_reconcile_found_total",
                "counter",
                "Failed reloads found by reconciliation that never arrived over the webhook.",
                &|t| Some(t.reconcile_found.to_string()),
            );
            family(
                "qlik_listener_reconcile_last_success_timestamp_seconds",
                "gauge",
                "When reconciliation with Qlik Cloud last completed (unix time).",
                &|t| t.reconciled_at.map(|at| at.to_string()),
            );
            family(
                "qlik_listener_webhook_healthy",
                "gauge",
                "Whether the watched Qlik Cloud webhook is enabled, calls the expected URL and delivers.",
                &|t| t.webhook_healthy.map(|h| u8::from(h).to_string()),
            );
            family(
                "qlik_listener_webhook_enabled",
                "gauge",
                "Whether the watched Qlik Cloud webhook is enabled.",
                &|t| t.webhook_enabled.map(|e| u8::from(e).to_string()),
            );
            family(
                "qlik_listener_webhook_failed_deliveries_total",
                "counter",
                "Failed deliveries of the watched webhook seen by the watchdog.",
                &|t| {
                    t.webhook_healthy
                        .map(|_| t.webhook_failed_deliveries.to_string())
                },
            );
        }
        let _ = writeln!(out, "# HELP qlik_listener_journal_ok Whether the journal takes writes and its file is in place.\n# TYPE qlik_listener_journal_ok gauge\nqlik_listener_journal_ok {}", u8::from(journal_ok));
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

/// The group of listeners sharing a journal, as `instance` sees it: whether it holds the
/// singleton role, and (when the journal answered) how many instances and role holders beat
/// within the last three leases.
pub fn render_group(
    out: &mut String,
    instance: &str,
    holds_role: bool,
    peers: Option<&[crate::journal::postgres::Peer]>,
) {
    let instance = instance.replace(['\\', '"', '\n'], "_");
    let _ = write!(
        out,
        "# HELP qlik_listener_holds_role Whether this instance runs the singleton work (reconciliation, webhook watchdog, pruning).\n# TYPE qlik_listener_holds_role gauge\nqlik_listener_holds_role{{instance=\"{instance}\"}} {}\n",
        u8::from(holds_role)
    );
    if let Some(peers) = peers {
        let holders = peers.iter().filter(|p| p.holds_role).count();
        let _ = write!(
            out,
            "# HELP qlik_listener_instances_alive Listeners sharing the journal whose heartbeat is recent.\n# TYPE qlik_listener_instances_alive gauge\nqlik_listener_instances_alive {}\n# HELP qlik_listener_role_holders_alive Of those, how many say they hold the singleton role (should be 1).\n# TYPE qlik_listener_role_holders_alive gauge\nqlik_listener_role_holders_alive {holders}\n",
            peers.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped Grafana dashboard and Prometheus rules use is one the listener
    /// exports (a renamed metric would leave a panel empty and an alert silent).
    #[test]
    fn the_shipped_dashboard_and_rules_use_exported_metrics() {
        let mut exported = METRICS.render(&[("qlik-cloud-events", true)], true, Some(3));
        let peer = crate::journal::postgres::Peer {
            id: "a".into(),
            seen_at: 0,
            holds_role: true,
        };
        render_group(&mut exported, "a", true, Some(&[peer]));
        let exported: Vec<&str> = exported
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let dashboard = include_str!("../../infra/grafana/qlik-listener.json");
        let rules = include_str!("../../infra/prometheus/qlik-listener-rules.yaml");
        let dashboard: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let mut queries: Vec<String> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                queries.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
        let rules: serde_norway::Value = serde_norway::from_str(rules).unwrap();
        let mut alerts = 0;
        for group in rules["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                assert!(rule["alert"].as_str().is_some(), "{rule:?}");
                assert!(
                    rule["annotations"]["summary"].as_str().is_some(),
                    "{rule:?}"
                );
                queries.push(rule["expr"].as_str().unwrap().to_owned());
                alerts += 1;
            }
        }
        assert!(alerts >= 5 && queries.len() > alerts, "{queries:?}");
        // What docs/operations.md says to watch has a rule: backlog, rejections, absence.
        for watched in [
            "qlik_listener_backlog_events",
            "qlik_listener_events_rejected_total",
            "absent(up{job=\"qlik-listener\"})",
            "up{job=\"qlik-listener\"} == 0",
        ] {
            assert!(
                queries.iter().any(|q| q.contains(watched)),
                "no rule or panel for {watched}"
            );
        }
        for query in &queries {
            let names = query
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("qlik_listener_"));
            // Prometheus' own `up` of the job the rules file says to name `qlik-listener`.
            let mut any = query.contains(r#"up{job="qlik-listener"}"#);
            for name in names {
                any = true;
                assert!(
                    exported.contains(&name),
                    "{name} (in {query}) is not exported: {exported:?}"
                );
            }
            assert!(any, "no listener metric in {query}");
        }
    }
}
