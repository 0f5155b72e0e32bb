//! `qlik-listener preview`: what each alert channel would send, for a sample failed reload or
//! an event from the journal, printed; with `--send`, delivered for real. The loop a template
//! author and a first-time user need.

use crate::config::Config;
use crate::events::alert_data::{self, AlertData};
use crate::events::enrich::Enrichment;
use crate::qlik_api::{AppInfo, AppItem, ReloadInfo, UserInfo};
use anyhow::Context as _;

const SAMPLE_EVENT: &str =
    include_str!("../../../testdata/events/app-reload-failed.cloudevents.json");
const SAMPLE_LOG: &str = include_str!("../../../testdata/events/script-log.txt");

/// `preview`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this channel (`teams`, `slack`, `email`, `webhook-1`, …); default every enabled one.
    #[arg(long)]
    channel: Option<String>,
    /// An event from the journal (its id, as `history` shows it) instead of the sample.
    #[arg(long)]
    event: Option<String>,
    /// Deliver it too, for real, on the shown channels.
    #[arg(long)]
    send: bool,
    /// Which configured tenant's channels (its id or host name) for the sample; default the
    /// first. With --event, the event's own tenant (another one is refused).
    #[arg(long)]
    tenant: Option<String>,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let (data, tenant) = match &args.event {
        Some(id) => {
            let (data, event_tenant) = journaled(config, id).await?;
            let tenant = event_tenant_config(config, &event_tenant, args.tenant.as_deref())
                .with_context(|| format!("--event {id}"))?;
            (data, tenant)
        }
        None => {
            let tenant = super::tenant(config, args.tenant.as_deref())?;
            (sample(config, tenant)?, tenant)
        }
    };
    let channels: Vec<_> = tenant
        .channels
        .iter()
        .filter(|c| args.channel.as_deref().is_none_or(|w| c.id == w))
        .cloned()
        .collect();
    anyhow::ensure!(
        !channels.is_empty(),
        "no enabled alert channel{} under {}.alert",
        args.channel
            .as_deref()
            .map(|c| format!(" named {c}"))
            .unwrap_or_default(),
        tenant.path
    );
    for channel in &channels {
        for (route, text) in crate::notify::preview(channel, &data) {
            // Line breaks kept (a rendered message has them), other control characters shown.
            let text = crate::notify::render::escape_controls(&text, &['\n']);
            println!("== {route} ({})\n{text}\n", channel.target.kind().as_str());
        }
    }
    if args.send {
        let journal = super::journal_opened(config, false).await?;
        let id = format!("preview-{}", crate::journal::now_ms());
        let give_up = std::time::Duration::from_secs(60);
        let sent = super::deliver_now(config, &journal, &id, &channels, &data, give_up).await?;
        for d in sent {
            println!(
                "sent on {}: {}{}",
                d.channel,
                d.state.as_str(),
                d.last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Whose channels an event's alert goes to: its own tenant's (a `--tenant` naming another
/// configured tenant is refused: the alert would reach the wrong people). A tenant configured
/// by host name cannot be matched by the event's id: then `--tenant`, or the only tenant.
fn event_tenant_config<'c>(
    config: &'c Config,
    event_tenant: &str,
    wanted: Option<&str>,
) -> anyhow::Result<&'c crate::config::TenantConfig> {
    use crate::config::TenantRef;
    let own = config
        .tenants
        .iter()
        .find(|t| matches!(&t.id, TenantRef::Id(id) if id == event_tenant));
    match (own, wanted) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(wanted)) => {
            let chosen = super::tenant(config, Some(wanted))?;
            anyhow::ensure!(
                std::ptr::eq(own, chosen),
                "the event is tenant {event_tenant}'s, not --tenant {wanted}'s: its alert goes to its own tenant's channels (leave out --tenant)"
            );
            Ok(own)
        }
        (None, Some(wanted)) => super::tenant(config, Some(wanted)),
        (None, None) if config.tenants.len() == 1 => super::tenant(config, None),
        (None, None) => anyhow::bail!(
            "the event is tenant {event_tenant}'s, which is not configured by that id: name its tenant with --tenant"
        ),
    }
}

/// The alert data of a journaled event (as it was stored, or built from its body), and its
/// tenant id.
async fn journaled(config: &Config, id: &str) -> anyhow::Result<(AlertData, String)> {
    let journal = super::journal(config).await?;
    let entry = journal
        .get(id)
        .await?
        .with_context(|| format!("--event: no event {id} in {}", super::journal_shown(config)))?;
    if let Some(data) = entry
        .enrichment
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
    {
        return Ok((data, entry.tenant_id));
    }
    let tenant = event_tenant_config(config, &entry.tenant_id, None)?;
    let data = build(config, tenant, &entry.body, &Enrichment::default())
        .context("--event: the event's body is not a reload event any more")?;
    Ok((data, entry.tenant_id))
}

/// The alert data of a reload event's `body` with `enrichment`, as the pipeline builds it.
fn build(
    config: &Config,
    tenant: &crate::config::TenantConfig,
    body: &[u8],
    enrichment: &Enrichment,
) -> anyhow::Result<AlertData> {
    let event = qlik_events::Event::parse(body)?;
    let reload = event
        .reload()
        .and_then(Result::ok)
        .context("not a reload event")?;
    let inputs = alert_data::Inputs {
        event: &event,
        attempt: None,
        reload: &reload,
        tenant,
        enrichment,
        generic_urls: &config.generic_urls,
        time_zone: &config.time_zone,
    };
    Ok(alert_data::build(&inputs, 100, 100))
}

/// A failed reload as the Qlik Cloud API would describe it, with a sample script log.
pub(super) fn sample(
    config: &Config,
    tenant: &crate::config::TenantConfig,
) -> anyhow::Result<AlertData> {
    let enrichment = Enrichment {
        reload: Some(ReloadInfo {
            trigger: Some("chronos".into()),
            status: Some("FAILED".into()),
            creation_time: Some("2026-11-20T06:14:01.000Z".into()),
            start_time: Some("2026-11-20T06:14:04.090Z".into()),
            end_time: Some("2026-11-20T06:14:52.120Z".into()),
            error_code: Some("EngineReloadFailed".into()),
            error_message: Some("Field \"Amount\" not found".into()),
            log: Some("Error: Field \"Amount\" not found".into()),
        }),
        app: Some(AppInfo {
            name: Some("Sales forecast – EMEA (sample)".into()),
            description: Some("A sample app for qlik-listener preview".into()),
            owner_id: Some("65a1f0c2e4b0d1a2b3c4d5e6".into()),
            has_section_access: Some(false),
            published: Some(true),
            publish_time: Some("2026-10-01T09:00:00.000Z".into()),
            thumbnail: Some("/api/v1/apps/sample/media/thumbnail.png".into()),
        }),
        owner: Some(UserInfo {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.com".into()),
            tenant_id: None,
            picture: Some("https://example.com/ada.png".into()),
        }),
        item: Some(AppItem {
            tags: vec!["alert".into()],
            app_file_size: Some(52_428_800),
        }),
        script_log: Some(SAMPLE_LOG.to_owned()),
        errors: Vec::new(),
    };
    build(config, tenant, SAMPLE_EVENT.as_bytes(), &enrichment).context("the sample event")
}
