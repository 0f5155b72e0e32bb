//! `qlik-listener history`: what the journal holds, for operators.
//!
//! Read-only and safe while the listener runs (SQLite WAL allows a reader beside the writer).

use crate::config::Config;
use crate::journal::{Delivery, DeliveryState, Entry, Journal, JournalError, State};
use anyhow::Context as _;
use serde_json::json;
use std::time::Duration;

/// `history`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// How far back: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_age)]
    since: Duration,
    /// Only events in this state, whatever their alerts (`reload-failed`: events that are
    /// reload failures). Not to be confused with --alert-state.
    #[arg(long = "event-state", alias = "status", value_enum)]
    status: Option<StatusFilter>,
    /// Only events with an alert (a delivery to a channel) in this state (`failed`: an alert
    /// that was given up on: the channel refused, or was down past giveUpSeconds).
    #[arg(long = "alert-state", alias = "alerts", value_enum)]
    alerts: Option<AlertFilter>,
    /// At most this many events: the newest that pass --event-state and --alert-state.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Send an event's alert again on one channel, now (e.g. after fixing a Teams URL), and
    /// record it on the event's delivery. Tag and rate-limit rules do not apply to a resend.
    Resend {
        /// The event's id as `history` shows it, or enough of its start to tell it apart.
        event: String,
        /// The channel (`teams`, `slack`, `email`, `webhook-1`, …; `email` resends to every
        /// recipient, `email:ops@example.com` to one).
        #[arg(long)]
        channel: String,
        /// How long to retry a failing channel before giving up.
        #[arg(long, default_value_t = 30)]
        give_up_seconds: u64,
        /// Send even when the alert was sent already, or the listener is still sending or
        /// retrying it (the receiver then gets it twice).
        #[arg(long)]
        force: bool,
    },
}

/// Which alerts to show events for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertFilter {
    Failed,
    Suppressed,
    Pending,
    Sent,
}

impl AlertFilter {
    fn keeps(self, deliveries: &[Delivery]) -> bool {
        let wanted = match self {
            AlertFilter::Failed => DeliveryState::Failed,
            AlertFilter::Suppressed => DeliveryState::Suppressed,
            AlertFilter::Pending => DeliveryState::Pending,
            AlertFilter::Sent => DeliveryState::Sent,
        };
        deliveries.iter().any(|d| {
            d.state == wanted
                || (wanted == DeliveryState::Pending && d.state == DeliveryState::Sending)
        })
    }
}

/// Prints the journal's events for `args`, or resends an alert.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let journal = super::journal(config).await?;
    if let Some(Action::Resend {
        event,
        channel,
        give_up_seconds,
        force,
    }) = args.action
    {
        let event = whole_id(config, &journal, &event).await?;
        if !force {
            if let Some(why) = resend_refusal(&journal.deliveries(&event).await?, &channel) {
                anyhow::bail!("{why}; add --force to send it again anyway");
            }
        }
        let give_up = std::time::Duration::from_secs(give_up_seconds);
        return resend(config, &journal, &event, &channel, give_up).await;
    }
    let rows = load(&journal, args.since, args.status, args.alerts, args.limit).await?;
    if args.json {
        println!("{}", json(&rows));
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// The event `id` names: an id, or the start of exactly one.
async fn whole_id(config: &Config, journal: &Journal, id: &str) -> anyhow::Result<String> {
    if id.is_empty() || journal.get(id).await?.is_some() {
        return Ok(id.to_owned());
    }
    let found = journal.ids_starting_with(id, 4).await?;
    match found.as_slice() {
        [] => anyhow::bail!(
            "no event {id} in {} (qlik-listener history lists them)",
            super::journal_shown(config)
        ),
        [one] => Ok(one.clone()),
        several => anyhow::bail!(
            "{id} is the start of several events ({}{}): give more of the id",
            several[..several.len().min(3)].join(", "),
            if several.len() > 3 { ", …" } else { "" }
        ),
    }
}

/// Which events to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Reload failures (pending or done).
    #[value(name = "reload-failed", alias = "failed")]
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

/// Why resending on `channel` would send an alert twice (it was sent, or the listener is
/// sending or retrying it), judged from the event's deliveries; `None` when it would not (it
/// failed, was suppressed, or was never tried). `channel` may name an e-mail channel (all its
/// recipients) or one recipient (`email:ops@example.com`). Pure.
pub fn resend_refusal(deliveries: &[Delivery], channel: &str) -> Option<String> {
    let prefix = format!("{channel}:");
    deliveries
        .iter()
        .filter(|d| d.channel == channel || d.channel.starts_with(&prefix))
        .find_map(|d| {
            let what = match d.state {
                DeliveryState::Sent => "was sent already",
                DeliveryState::Sending => "is being sent by the listener right now",
                DeliveryState::Pending => "is being retried by the listener",
                DeliveryState::Failed | DeliveryState::Suppressed => return None,
            };
            Some(format!(
                "the alert on {} {what}: resending would send it twice",
                d.channel
            ))
        })
}

/// Sends `event_id`'s alert again on `channel` and records the outcome on the event's delivery
/// (state, one more attempt, and a note saying it was resent).
async fn resend(
    config: &Config,
    journal: &Journal,
    event_id: &str,
    channel: &str,
    give_up: std::time::Duration,
) -> anyhow::Result<()> {
    let entry = journal
        .get(event_id)
        .await?
        .with_context(|| format!("no event {event_id} in {}", super::journal_shown(config)))?;
    let data: crate::events::alert_data::AlertData = entry
        .enrichment
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .with_context(|| {
            format!("event {event_id} has no alert to resend (not a reload failure, or not processed yet)")
        })?;
    let tenant = super::tenant(config, Some(&entry.tenant_id))
        .or_else(|e| match config.tenants.len() {
            1 => super::tenant(config, None),
            _ => Err(e),
        })
        .with_context(|| {
            format!(
                "event {event_id}'s tenant {} is not configured",
                entry.tenant_id
            )
        })?;
    let (name, recipient) = match channel.split_once(':') {
        Some((name, to)) => (name, Some(to.to_ascii_lowercase())),
        None => (channel, None),
    };
    let configured = tenant
        .channels
        .iter()
        .find(|c| c.id == name)
        .with_context(|| {
            let ids: Vec<&str> = tenant.channels.iter().map(|c| c.id.as_str()).collect();
            format!(
                "--channel {channel}: not an enabled channel of this tenant ({})",
                ids.join(", ")
            )
        })?;
    let mut only = configured.clone();
    if let (Some(to), crate::config::Target::Email(email)) = (&recipient, &mut only.target) {
        email.recipients.retain(|r| r.eq_ignore_ascii_case(to));
        if let Some(owner) = &mut email.owner_alert {
            owner.include_all = false;
            owner.include.clear();
        }
        anyhow::ensure!(
            !email.recipients.is_empty(),
            "--channel {channel}: {to} is not one of the channel's recipients"
        );
    }
    let attempt_id = format!("{event_id}#resend-{}", crate::journal::now_ms());
    let only = std::slice::from_ref(&only);
    let resent = super::deliver_now(config, journal, &attempt_id, only, &data, give_up).await?;
    let at = time(crate::journal::now_ms());
    let mut failed = 0;
    for d in resent {
        let before = journal.delivery(event_id, &d.channel).await?;
        let was = before
            .as_ref()
            .map(|b| format!("was {}", b.state.as_str()))
            .unwrap_or_else(|| "not sent before".to_owned());
        let note = match &d.last_error {
            Some(e) => format!("resent {at} UTC ({was}): {e}"),
            None => format!("resent {at} UTC ({was})"),
        };
        println!(
            "{}: {}{}",
            d.channel,
            d.state.as_str(),
            d.last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        failed += usize::from(d.state != DeliveryState::Sent);
        journal
            .set_delivery(Delivery {
                event_id: event_id.to_owned(),
                channel: d.channel.clone(),
                state: d.state,
                attempts: before.map_or(0, |b| b.attempts) + d.attempts,
                last_error: Some(note),
            })
            .await?;
    }
    anyhow::ensure!(failed == 0, "{failed} resend(s) failed");
    Ok(())
}

pub struct Row {
    pub entry: Entry,
    pub deliveries: Vec<Delivery>,
    /// With a shared journal: which listener recorded it and sent each alert.
    pub who: Option<crate::journal::postgres::Who>,
}

/// Events received in the last `since`, newest first, with their alert deliveries.
pub async fn load(
    journal: &Journal,
    since: Duration,
    status: Option<StatusFilter>,
    alerts: Option<AlertFilter>,
    limit: u32,
) -> Result<Vec<Row>, JournalError> {
    let since_ms = crate::journal::now_ms() - since.as_millis() as i64;
    let wanted = limit as usize;
    let mut rows = Vec::new();
    if wanted == 0 {
        return Ok(rows);
    }
    // The filters apply before the limit: `--alert-state failed --limit 5` is the five newest
    // events with a failed alert, however many newer events have none. Read newest first in
    // growing pages until there are enough or the journal has no more.
    // (An event recorded meanwhile shifts the pages: `seen` keeps a row from showing twice.)
    let mut seen = std::collections::HashSet::new();
    let mut page = limit.max(50);
    loop {
        let entries = journal.recent(since_ms, page).await?;
        let exhausted = entries.len() < page as usize;
        for entry in entries {
            if !seen.insert(entry.id.clone()) {
                continue;
            }
            if status.is_some_and(|s| !s.keeps(entry.state)) {
                continue;
            }
            let deliveries = journal.deliveries(&entry.id).await?;
            if alerts.is_some_and(|a| !a.keeps(&deliveries)) {
                continue;
            }
            let who = match journal.shared() {
                Some(pg) => Some(pg.who(&entry.id).await?),
                None => None,
            };
            rows.push(Row {
                entry,
                deliveries,
                who,
            });
            if rows.len() == wanted {
                return Ok(rows);
            }
        }
        if exhausted || page == u32::MAX {
            return Ok(rows);
        }
        page = page.saturating_mul(4);
    }
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

/// The app's name from the alert data, when the event has been enriched.
fn app_name(e: &Entry) -> Option<String> {
    let data: serde_json::Value = serde_json::from_str(e.enrichment.as_deref()?).ok()?;
    Some(data["appName"].as_str()?.to_owned()).filter(|n| !n.is_empty())
}

/// `Sales forecast (4f2c9d1e-…)`, or the id alone.
fn app_label(e: &Entry) -> String {
    match (app_name(e), &e.app_id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (None, Some(id)) => id.clone(),
        (Some(name), None) => name,
        (None, None) => "-".into(),
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
        // With a shared journal: `@listener` after what each one did.
        let by = |instance: Option<&String>| instance.map(|i| format!("@{i}")).unwrap_or_default();
        let alerts = r
            .deliveries
            .iter()
            .map(|d| {
                let sender = r.who.as_ref().and_then(|w| w.delivered_by.get(&d.channel));
                format!("{}:{}{}", d.channel, d.state.as_str(), by(sender))
            })
            .collect::<Vec<_>>()
            .join(" ");
        lines.push(
            [
                time(e.received_at),
                arrived_via(e).to_owned()
                    + &by(r.who.as_ref().and_then(|w| w.recorded_by.as_ref())),
                e.id.clone(),
                e.event_type.trim_start_matches("com.qlik.").to_owned(),
                app_label(e),
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
            ]
            .map(|cell| super::shown(&cell)),
        );
    }
    let mut out = super::aligned(&lines);
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
                "id": e.id, "type": e.event_type, "tenantId": e.tenant_id, "appId": e.app_id, "appName": app_name(e),
                "reloadId": e.reload_id, "reloadStatus": e.reload_status, "topic": e.topic,
                "receivedAt": time(e.received_at), "arrivedVia": arrived_via(e), "state": e.state.as_str(), "note": e.note,
                "recordedBy": r.who.as_ref().and_then(|w| w.recorded_by.clone()),
                "alerts": r.deliveries.iter().map(|d| json!({
                    "channel": d.channel, "state": d.state.as_str(), "attempts": d.attempts, "lastError": d.last_error,
                    "deliveredBy": r.who.as_ref().and_then(|w| w.delivered_by.get(&d.channel)),
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

    #[test]
    fn a_resend_that_would_send_twice_needs_force() {
        let d = |channel: &str, state| Delivery {
            event_id: "e".into(),
            channel: channel.into(),
            state,
            attempts: 1,
            last_error: None,
        };
        let all = [
            d("teams", DeliveryState::Sent),
            d("slack", DeliveryState::Failed),
            d("webhook-1", DeliveryState::Sending),
            d("email:a@x.com", DeliveryState::Pending),
            d("email:b@x.com", DeliveryState::Failed),
            d("console", DeliveryState::Suppressed),
        ];
        let says = |channel| resend_refusal(&all, channel).unwrap_or_default();
        assert!(says("teams").contains("on teams was sent already"));
        assert!(says("webhook-1").contains("being sent by the listener right now"));
        assert!(says("email").contains("email:a@x.com is being retried"));
        assert_eq!(resend_refusal(&all, "email:b@x.com"), None);
        assert_eq!(resend_refusal(&all, "slack"), None);
        assert_eq!(resend_refusal(&all, "console"), None);
        assert_eq!(resend_refusal(&all, "file"), None, "never tried");
        assert_eq!(resend_refusal(&all, "team"), None, "a name, not a prefix");
    }

    /// Text from Qlik reaches the table escaped (before: an app name or error message with an
    /// escape sequence drove the operator's terminal); `--json` keeps it as it is.
    #[test]
    fn the_table_shows_control_characters_instead_of_sending_them() {
        let entry = Entry {
            id: "e1".into(),
            event_type: "com.qlik.v1.app.reload.finished".into(),
            tenant_id: "t".into(),
            app_id: Some("a".into()),
            reload_id: None,
            reload_status: Some("error".into()),
            topic: "t".into(),
            received_at: 0,
            body: Vec::new(),
            state: crate::journal::State::Done,
            note: Some("\u{1b}]0;owned\u{7}\u{1b}[2J".into()),
            enrichment: None,
        };
        let rows = [Row {
            entry,
            deliveries: Vec::new(),
            who: None,
        }];
        let out = table(&rows);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
        assert!(out.contains("\\u{1b}]0;owned"), "{out}");
        assert!(
            json(&rows).to_string().contains("\\u001b"),
            "JSON keeps it, escaped"
        );
    }
}
