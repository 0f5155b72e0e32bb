//! The shared journal's tables and their versioned migrations.
//!
//! Promises: the listener creates and upgrades the schema itself; instances that start together
//! migrate one at a time (a transaction-scoped advisory lock), each migration is one
//! transaction, and a database written by a newer version is refused, as with SQLite.

use super::super::JournalError;

/// Migrations, in order; the schema's version is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the SQLite journal's tables, plus who recorded and delivered what, the lease of an
    // event's handling, and the instances of the group.
    "
CREATE TABLE events (
    id            TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    app_id        TEXT,
    reload_id     TEXT,
    reload_status TEXT,
    topic         TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    body          BYTEA NOT NULL,
    state         TEXT NOT NULL,
    note          TEXT,
    enrichment    TEXT,
    recorded_by   TEXT,
    -- The instance handling the event while it is pending, and until when (unix ms): another
    -- instance takes it over once the lease has run out.
    owner         TEXT,
    lease_until   BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX events_accepted ON events(id) WHERE state NOT IN ('rejected', 'skipped');
CREATE UNIQUE INDEX events_refused ON events(id, tenant_id, state) WHERE state IN ('rejected', 'skipped');
CREATE INDEX events_pending ON events(received_at) WHERE state = 'pending';
CREATE INDEX events_received ON events(received_at);
CREATE INDEX events_reload ON events(tenant_id, reload_id);
CREATE INDEX events_type ON events(tenant_id, event_type);
CREATE INDEX events_id ON events(id);
CREATE TABLE deliveries (
    event_id     TEXT NOT NULL,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    updated_at   BIGINT NOT NULL,
    delivered_by TEXT,
    PRIMARY KEY (event_id, channel)
);
CREATE TABLE reload_alerts (
    tenant_id  TEXT NOT NULL,
    reload_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, reload_id)
);
CREATE TABLE watch_states (
    tenant_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL
);
CREATE TABLE rate_limits (
    key          TEXT PRIMARY KEY,
    last_sent_at BIGINT NOT NULL
);
CREATE TABLE instances (
    id         TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    holds_role BOOLEAN NOT NULL DEFAULT false,
    version    TEXT NOT NULL
);
",
];

/// The schema version this listener writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Serialises migrations between instances (any constant; `qlik` in ASCII).
const MIGRATION_LOCK: i64 = 0x716c_696b_0001;

/// Creates or upgrades the schema; refuses a newer one.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    where_: &str,
) -> Result<(), JournalError> {
    let err = |e: tokio_postgres::Error| JournalError::postgres("migrating the schema", &e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .map_err(err)?;
    let found: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(err)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(JournalError::Newer {
            path: where_.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(
            version = i + 1,
            journal = where_,
            "journal: migrating the schema"
        );
        tx.batch_execute(sql).await.map_err(err)?;
    }
    if found == 0 {
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&SCHEMA_VERSION])
            .await
            .map_err(err)?;
    } else if found < SCHEMA_VERSION {
        tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
