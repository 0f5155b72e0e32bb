//! The journal's tables, their version and their migrations.

use super::super::JournalError;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

/// The journal's schema version (`PRAGMA user_version`). Raised with each change to the
/// tables; a file with a higher one is refused at start ([`JournalError::Newer`]).
/// 0: journals from before versions were kept (same tables as 1).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id            TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    app_id        TEXT,
    reload_id     TEXT,
    reload_status TEXT,
    topic         TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    state         TEXT NOT NULL,
    note          TEXT,
    enrichment    TEXT
);
-- An event id is accepted once; refused rows are kept once per (id, tenant, state) and
-- never stand in the way of the accepted one.
CREATE UNIQUE INDEX IF NOT EXISTS events_accepted ON events(id) WHERE state NOT IN ('rejected', 'skipped');
CREATE UNIQUE INDEX IF NOT EXISTS events_refused ON events(id, tenant_id, state) WHERE state IN ('rejected', 'skipped');
CREATE INDEX IF NOT EXISTS events_state ON events(state);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id   TEXT NOT NULL,
    channel    TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, channel)
);
CREATE INDEX IF NOT EXISTS events_reload ON events(tenant_id, reload_id);
-- Whether a tenant sends final outcomes (`has_event_type`), asked for each failed attempt:
-- without it, a scan of the whole table per event.
CREATE INDEX IF NOT EXISTS events_type ON events(tenant_id, event_type);
-- An event by id, accepted or refused (`get`): the unique indexes above are partial, which a
-- lookup by id alone cannot use.
CREATE INDEX IF NOT EXISTS events_id ON events(id);
-- One alert per reload: the event whose alert speaks for the reload (tenant + reload id).
CREATE TABLE IF NOT EXISTS reload_alerts (
    tenant_id  TEXT NOT NULL,
    reload_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, reload_id)
);
-- Reconciliation's watermark in versions before the sliding window (no longer read or written;
-- kept so that such journals still open the same way).
CREATE TABLE IF NOT EXISTS reconcile_marks (
    tenant_id TEXT PRIMARY KEY,
    until_ms  INTEGER NOT NULL
);
-- The webhook watchdog: per tenant, the webhook's last reported state.
CREATE TABLE IF NOT EXISTS watch_states (
    tenant_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limits (
    key          TEXT PRIMARY KEY,
    last_sent_at INTEGER NOT NULL
);
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            open_err(rusqlite::Error::InvalidPath(
                format!("{}: {e}", dir.display()).into(),
            ))
        })?;
    }
    private_file(path).map_err(|e| {
        open_err(rusqlite::Error::InvalidPath(
            format!("{}: {e}", path.display()).into(),
        ))
    })?;
    let conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::Newer {
            path: path.display().to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    migrate(&conn).map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
    }
    Ok(conn)
}

/// Journals written before refused rows stopped claiming event ids keyed `events` by id alone
/// (`id TEXT PRIMARY KEY`): their rows are moved to the current table, unchanged.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|sql| sql.contains("PRIMARY KEY")) {
        return Ok(());
    }
    tracing::info!("journal: upgrading the events table (refused events no longer claim their id)");
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         ALTER TABLE events RENAME TO events_before_upgrade;
         DROP INDEX IF EXISTS events_state;
         DROP INDEX IF EXISTS events_received;
         {SCHEMA}
         INSERT INTO events SELECT * FROM events_before_upgrade;
         DROP TABLE events_before_upgrade;
         COMMIT;"
    ))
}

/// The journal holds alert data and script-log excerpts: a new file is created readable by its
/// owner only (0600; SQLite gives its WAL files the same mode), and an existing one readable by
/// others is warned about. (On Windows the folder's ACL decides.)
pub(super) fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = %format!("{mode:04o}"), "the journal (alert data, script-log excerpts) is readable by other users: chmod 600 it");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
