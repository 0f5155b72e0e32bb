//! `qlik-listener journal migrate`: moves the SQLite journal into a shared one in PostgreSQL,
//! so that two or three listeners can take over from the one that ran alone.
//!
//! Promises: nothing lost (every event, delivery, reload claim, watchdog state and rate-limit
//! slot is copied, in one transaction), nothing resent (deliveries keep their state; pending
//! work is resumed once by the group); run again, it adds only what is missing. The listener
//! must be stopped (the SQLite journal's lock says so).

use crate::config::Config;
use crate::journal::{InstanceLock, Journal};
use anyhow::Context as _;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy the SQLite journal (journal.path) into the shared journal in PostgreSQL: the one
    /// of --to, else journal.url of the config (with its password). Stop the listener first.
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The shared journal, postgres://user@host:5432/database[?sslmode=…] (default: the
    /// config's journal.url). The password comes from journal.password or
    /// journal.passwordFile.
    #[arg(long)]
    to: Option<String>,
}

pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    let Command::Migrate(args) = command;
    let path = &config.journal_path;
    anyhow::ensure!(
        path.exists(),
        "no SQLite journal at {} (Butler.qlikCloudListener.journal.path): nothing to migrate",
        path.display()
    );
    let _lock =
        InstanceLock::acquire(path).context("stop the listener before migrating its journal")?;
    let mut settings = match &config.shared_journal {
        Some(shared) => shared.settings(),
        None => crate::journal::postgres::Settings {
            url: String::new(),
            password: None,
            ca_file: None,
            lease: std::time::Duration::from_secs(30),
            instance: "migrate".into(),
        },
    };
    if let Some(to) = args.to {
        crate::journal::postgres::parse_url(&to).map_err(|e| anyhow::anyhow!("--to {e}"))?;
        settings.url = to;
    }
    anyhow::ensure!(
        !settings.url.is_empty(),
        "no target: give --to postgres://… or set Butler.qlikCloudListener.journal.url"
    );
    let source = Journal::open(path).await?;
    let contents = source.contents().await?;
    let target = Journal::open_postgres(&settings)
        .await
        .with_context(|| format!("cannot open the shared journal {}", settings.url))?;
    let shared = target
        .shared()
        .context("the target is not a shared journal")?;
    let pending = contents
        .events
        .iter()
        .filter(|e| e.state == crate::journal::State::Pending)
        .count();
    let (events, deliveries) = shared.import(&contents).await?;
    println!(
        "copied {} into {}: {events} of {} events ({pending} with work left, resumed by the first listener to start), {deliveries} of {} deliveries, {} reload claims",
        path.display(),
        settings.url,
        contents.events.len(),
        contents.deliveries.len(),
        contents.reload_alerts.len(),
    );
    println!("next: keep Butler.qlikCloudListener.journal.url set to it, and start the listeners");
    Ok(())
}
