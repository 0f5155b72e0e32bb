//! `qlik-listener history`: what the journal holds, for operators.
//!
//! Read-only and safe while the listener runs (SQLite WAL allows a reader beside the writer).

use crate::config::Config;
use crate::journal::{Delivery, Entry, Journal, JournalError, State};
use serde_json::json;
use std::time::Duration;

/// `history`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How far back: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_age)]
    since: Duration,
    /// Only events in this state (`failed`: reload failures).
    #[arg(long, value_enum)]
    status: Option<StatusFilter>,
    /// At most this many events.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the journal's events for `args`.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.journal_path.exists(),
        "no journal at {} yet: the listener has not run with this config",
        config.journal_path.display()
    );
    let journal = Journal::open(&config.journal_path).await?;
    let rows = load(&journal, args.since, args.status, args.limit).await?;
    if args.json {
        println!("{}", json(&rows));
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// Which events to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Reload failures (pending or done).
    Failed,
    Pending,
    Done,
    Recorded,
    Skipped,
    Rejected,
}

impl StatusFilter {
    fn keeps(self, state: State) -> bool {
        match self {
            StatusFilter::Failed => matches!(state, State::Pending | State::Done),
            StatusFilter::Pending => state == State::Pending,
            StatusFilter::Done => state == State::Done,
            StatusFilter::Recorded => state == State::Recorded,
            StatusFilter::Skipped => state == State::Skipped,
            StatusFilter::Rejected => state == State::Rejected,
        }
    }
}

/// `90s`, `30m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not an age like 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{text}': the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

pub struct Row {
    pub entry: Entry,
    pub deliveries: Vec<Delivery>,
}

/// Events received in the last `since`, newest first, with their alert deliveries.
pub async fn load(
    journal: &Journal,
    since: Duration,
    status: Option<StatusFilter>,
    limit: u32,
) -> Result<Vec<Row>, JournalError> {
    let since_ms = crate::journal::now_ms() - since.as_millis() as i64;
    let mut rows = Vec::new();
    for entry in journal.recent(since_ms, limit).await? {
        if status.is_some_and(|s| !s.keeps(entry.state)) {
            continue;
        }
        let deliveries = journal.deliveries(&entry.id).await?;
        rows.push(Row { entry, deliveries });
    }
    Ok(rows)
}

fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| t.chars().take(19).collect::<String>().replace('T', " "))
        .unwrap_or_default()
}

/// How the event came: over MQTT (the webhook path), or found by reconciliation.
fn arrived_via(e: &Entry) -> &'static str {
    if e.topic == crate::events::reconcile::TOPIC {
        "reconciliation"
    } else {
        "mqtt"
    }
}

/// A plain-text table.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "received (UTC)".to_owned(),
        "via".into(),
        "event".into(),
        "type".into(),
        "app".into(),
        "reload".into(),
        "state".into(),
        "alerts".into(),
    ]];
    for r in rows {
        let e = &r.entry;
        let alerts = r
            .deliveries
            .iter()
            .map(|d| format!("{}:{}", d.channel, d.state.as_str()))
            .collect::<Vec<_>>()
            .join(" ");
        lines.push([
            time(e.received_at),
            arrived_via(e).into(),
            e.id.clone(),
            e.event_type.trim_start_matches("com.qlik.").to_owned(),
            e.app_id.clone().unwrap_or_else(|| "-".into()),
            e.reload_status.clone().unwrap_or_else(|| "-".into()),
            e.state.as_str().to_owned()
                + &e.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
            if alerts.is_empty() {
                "-".into()
            } else {
                alerts
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out += &format!("{} event(s)\n", rows.len());
    out
}

/// The same rows as JSON.
pub fn json(rows: &[Row]) -> serde_json::Value {
    json!(rows
        .iter()
        .map(|r| {
            let e = &r.entry;
            json!({
                "id": e.id, "type": e.event_type, "tenantId": e.tenant_id, "appId": e.app_id,
                "reloadId": e.reload_id, "reloadStatus": e.reload_status, "topic": e.topic,
                "receivedAt": time(e.received_at), "arrivedVia": arrived_via(e), "state": e.state.as_str(), "note": e.note,
                "alerts": r.deliveries.iter().map(|d| json!({
                    "channel": d.channel, "state": d.state.as_str(), "attempts": d.attempts, "lastError": d.last_error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_age("15"), Ok(Duration::from_secs(15)));
        assert!(parse_age("1w").unwrap_err().contains("unit"));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("").is_err());
    }
}
