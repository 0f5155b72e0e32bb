//! What the binary's subcommands other than `run` do: `history` (the journal for operators),
//! `webhook` (the Qlik Cloud webhook that feeds the forwarder), `preview` (what each alert
//! channel would send), `journal migrate` (SQLite to a shared PostgreSQL journal), `service` (the listener as a Windows service) and `broker` (an embedded MQTT
//! broker for trying things on one machine).

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod history;
pub mod migrate;
pub mod online;
pub mod preview;
pub mod service;
pub mod webhooks;

use crate::config::{Config, TenantConfig, TenantRef};
use anyhow::Context as _;

/// The configured journal, for the command-line tools beside a running listener: the shared one
/// in PostgreSQL (`journal.url`), or the SQLite file, which must exist already.
pub async fn journal(config: &Config) -> anyhow::Result<crate::journal::Journal> {
    journal_opened(config, true).await
}

/// [`journal`], creating the SQLite file when `must_exist` is false (`preview --send` records
/// its deliveries before the listener ever ran).
pub async fn journal_opened(
    config: &Config,
    must_exist: bool,
) -> anyhow::Result<crate::journal::Journal> {
    match &config.shared_journal {
        Some(shared) => crate::journal::Journal::open_postgres(&shared.settings())
            .await
            .with_context(|| format!("Butler.qlikCloudListener.journal.url: {}", shared.url)),
        None => {
            anyhow::ensure!(
                !must_exist || config.journal_path.exists(),
                "no journal at {} yet: the listener has not run with this config",
                config.journal_path.display()
            );
            Ok(crate::journal::Journal::open(&config.journal_path).await?)
        }
    }
}

/// Where the configured journal is, for messages (a URL without its password).
pub fn journal_shown(config: &Config) -> String {
    match &config.shared_journal {
        Some(shared) => shared.url.clone(),
        None => config.journal_path.display().to_string(),
    }
}

/// The configured tenant named `wanted` (its id or host name, as `--tenant` gives it), or the
/// first one.
fn tenant<'a>(config: &'a Config, wanted: Option<&str>) -> anyhow::Result<&'a TenantConfig> {
    match wanted {
        Some(wanted) => config
            .tenants
            .iter()
            .find(|t| matches!(&t.id, TenantRef::Id(id) | TenantRef::Host(id) if id == wanted))
            .with_context(|| format!("--tenant: {wanted} is not configured")),
        None => config.tenants.first().context("no tenant configured"),
    }
}

/// Sends `data` on `channels` now, from the command line, as a one-off under the journal id
/// `id` (no tag or rate-limit rules; no MQTT channel: the running listener holds the broker
/// connection), retrying a failing channel for up to `give_up`; returns the deliveries.
async fn deliver_now(
    config: &Config,
    journal: &crate::journal::Journal,
    id: &str,
    channels: &[crate::config::ChannelConfig],
    data: &crate::events::alert_data::AlertData,
    give_up: std::time::Duration,
) -> anyhow::Result<Vec<crate::journal::Delivery>> {
    let notifier = crate::notify::Notifier::new(
        journal.clone(),
        give_up,
        std::time::Duration::from_millis(config.retry_base_ms),
        None,
        config.smtp.as_ref(),
    )?;
    notifier.deliver_by_hand(id, channels, data).await?;
    Ok(journal.deliveries(id).await?)
}

/// `text` for a terminal line: control characters (escape sequences, line breaks, tabs, …)
/// written as `\u{..}`, so text from Qlik (app names, error messages) cannot drive the
/// operator's terminal or break a table. `--json` output keeps them (escaped by JSON).
pub fn shown(text: &str) -> String {
    crate::notify::render::escape_controls(text, &[])
}

/// `lines` as a table: each column as wide as its widest cell (in characters), two spaces
/// apart, one line each.
pub fn aligned<L: AsRef<[String]>>(lines: &[L]) -> String {
    let columns = lines.iter().map(|l| l.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.as_ref().get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod shown_tests {
    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            super::shown("App \u{1b}[2J\nnext\t\u{7}"),
            "App \\u{1b}[2J\\u{a}next\\u{9}\\u{7}"
        );
        assert_eq!(super::shown("Sales Ü"), "Sales Ü");
    }
}
