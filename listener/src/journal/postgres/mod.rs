//! The PostgreSQL backend of the journal: one database shared by two or three listeners.
//!
//! Promises (beside the journal's own, in the parent module):
//! - uniqueness is the database's: an event id is recorded once and a reload claimed once
//!   across instances (`INSERT … ON CONFLICT DO NOTHING`), whichever instance receives it;
//! - a pending event is handled by one instance at a time: the one holding its lease
//!   (`owner`, `lease_until`). The instance that records an event holds it; the holder renews
//!   its leases with its heartbeat ([`Postgres::heartbeat`]); when an instance dies, its
//!   events are taken over by another once the lease has run out ([`Postgres::pending`]). An
//!   alert request in flight at the kill is sent again by the new holder (at-least-once);
//! - singleton work runs on the holder of a session advisory lock ([`role`]);
//! - every call is committed when it returns; a database that cannot be reached is an error
//!   for the caller (the message is then held unacknowledged), never a crash; the pool
//!   reconnects by itself.
//!
//! Layout: this file connects and keeps the group (instances, leases); [`schema`] the tables
//! and migrations; `events` and `deliveries` the queries, by table; [`role`] the election.

mod deliveries;
mod events;
mod import;
pub mod role;
mod schema;

use super::JournalError;
use qlik_events::Secret;
use std::sync::Arc;

pub use schema::SCHEMA_VERSION;

/// How to reach the shared journal, as configured.
#[derive(Clone)]
pub struct Settings {
    /// `postgres://user@host:port/database?sslmode=…`, without a password.
    pub url: String,
    pub password: Option<Secret>,
    /// CA certificates (PEM) for the server's certificate; default: the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long an instance's hold on an event (and its heartbeat) lasts without renewal.
    pub lease: std::time::Duration,
    /// This listener's name in the group.
    pub instance: String,
}

/// The connector: TLS with rustls unless the URL says `sslmode=disable`.
#[derive(Clone)]
enum Tls {
    Off(tokio_postgres::NoTls),
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A handle on the shared journal; clones share its pool.
#[derive(Clone)]
pub struct Postgres {
    pool: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    instance: Arc<str>,
    lease_ms: i64,
    /// The URL as shown in messages (no password).
    shown: Arc<str>,
    record_failure: super::RecordFailure,
}

/// The database's clock in unix ms: leases and heartbeats of instances on several hosts are
/// compared on one clock, so a host whose clock is off neither steals nor keeps leases.
pub(super) const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Runs a statement prepared once per connection (tokio-postgres otherwise prepares each call
/// anew: one round trip more per query).
pub(super) async fn execute_cached(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// [`execute_cached`] for rows.
pub(super) async fn query_cached(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// [`execute_cached`] for at most one row.
pub(super) async fn query_opt_cached(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

/// [`execute_cached`] for exactly one row.
pub(super) async fn query_one_cached(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_one(&statement, params).await
}

/// Which listener of the group recorded an event and sent its alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    pub recorded_by: Option<String>,
    /// (channel, instance).
    pub delivered_by: std::collections::HashMap<String, String>,
}

/// Takes the slot `$1` unless it was taken in the last `$2` ms; returns a row when taken.
pub(super) fn take_slot() -> String {
    format!(
        "INSERT INTO rate_limits (key, last_sent_at) VALUES ($1, {DB_NOW})
         ON CONFLICT (key) DO UPDATE SET last_sent_at = excluded.last_sent_at
         WHERE rate_limits.last_sent_at <= {DB_NOW} - $2
         RETURNING key"
    )
}

/// One row of the `instances` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    /// Unix ms of its last heartbeat.
    pub seen_at: i64,
    pub holds_role: bool,
}

impl JournalError {
    pub(crate) fn postgres(what: &str, e: &tokio_postgres::Error) -> JournalError {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            }
        };
        JournalError::Postgres(format!("{what}: {detail}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> JournalError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            JournalError::postgres("cannot connect to PostgreSQL", &e)
        }
        other => JournalError::Postgres(format!("cannot connect to PostgreSQL: {other}")),
    }
}

/// Parses a journal URL; the error says what is wrong without repeating the URL (it may hold
/// a password).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL ({e})"))?;
    if config.get_password().is_some() {
        return Err(
            "holds a password: put it in journal.password (as ${VARIABLE}) or journal.passwordFile instead, so it stays out of logs"
                .into(),
        );
    }
    if config.get_hosts().is_empty() {
        return Err("names no host (postgres://user@host:5432/database)".into());
    }
    if config.get_dbname().is_none() {
        return Err("names no database (postgres://user@host:5432/database)".into());
    }
    Ok(config)
}

impl Postgres {
    /// Connects and creates or upgrades the schema (the group learns of this instance from its
    /// first heartbeat).
    pub async fn open(settings: &Settings) -> Result<Postgres, JournalError> {
        let mut config = parse_url(&settings.url)
            .map_err(|e| JournalError::Postgres(format!("journal.url {e}")))?;
        if let Some(p) = &settings.password {
            config.password(p.expose());
        }
        config
            .application_name(format!("qlik-listener {}", settings.instance))
            .connect_timeout(std::time::Duration::from_secs(10))
            .keepalives_idle(std::time::Duration::from_secs(30));
        let tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            Tls::Off(tokio_postgres::NoTls)
        } else {
            let names = qlik_events::tls::SettingNames {
                ca_file: "Butler.qlikCloudListener.journal.caFile",
                cert_file: "-",
                key_file: "-",
            };
            let files = qlik_events::tls::TlsFiles {
                ca_file: settings.ca_file.as_deref(),
                ..Default::default()
            };
            let rustls = qlik_events::tls::client_config(files, names)
                .map_err(|e| JournalError::Postgres(e.to_string()))?;
            Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(rustls))
        };
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Off(t) => {
                deadpool_postgres::Manager::from_config(config.clone(), *t, manager_config)
            }
            Tls::Rustls(t) => {
                deadpool_postgres::Manager::from_config(config.clone(), t.clone(), manager_config)
            }
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(std::time::Duration::from_secs(15)))
            .create_timeout(Some(std::time::Duration::from_secs(15)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| JournalError::Postgres(format!("cannot make a connection pool: {e}")))?;
        let shown: Arc<str> = settings.url.as_str().into();
        let pg = Postgres {
            pool,
            config,
            tls,
            instance: settings.instance.as_str().into(),
            lease_ms: settings.lease.as_millis() as i64,
            shown,
            record_failure: Default::default(),
        };
        let mut client = pg.pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client, &pg.shown).await?;
        Ok(pg)
    }

    /// This instance's name in the group.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where the journal is, for messages (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A connection of its own, outside the pool (for the role's session lock).
    async fn connect_alone(&self) -> Result<tokio_postgres::Client, JournalError> {
        let err = |e: tokio_postgres::Error| JournalError::postgres("cannot connect", &e);
        match &self.tls {
            Tls::Off(t) => {
                let (client, conn) = self.config.connect(*t).await.map_err(err)?;
                tokio::spawn(conn);
                Ok(client)
            }
            Tls::Rustls(t) => {
                let (client, conn) = self.config.connect(t.clone()).await.map_err(err)?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    }

    /// Whether the journal can be written now.
    pub async fn check_writable(&self) -> Result<(), JournalError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE instances SET seen_at = seen_at WHERE id = $1",
                &[&&*self.instance],
            )
            .await
            .map_err(|e| JournalError::postgres("writing", &e))?;
        Ok(())
    }

    /// Why events could not be recorded, while the last attempt failed.
    pub fn record_failure(&self) -> Option<String> {
        self.record_failure.get()
    }

    fn note_record(&self, error: Option<&JournalError>) {
        self.record_failure.note(error);
    }

    /// No file to watch: the database is PostgreSQL's to keep.
    pub fn file_problem(&self) -> Option<String> {
        None
    }

    pub async fn watch(self) {
        std::future::pending::<()>().await
    }

    /// A connection of its own for the heartbeat: renewing leases must not wait behind the
    /// pool's work (a listener busy with a backlog would otherwise lose its leases, and another
    /// would send its alerts a second time).
    pub async fn heartbeat_connection(&self) -> Result<tokio_postgres::Client, JournalError> {
        self.connect_alone().await
    }

    /// Says this instance is alive (and whether it holds the role) and renews its leases on
    /// the events it is handling, on `client` ([`Self::heartbeat_connection`]).
    pub async fn heartbeat(
        &self,
        client: &tokio_postgres::Client,
        holds_role: bool,
    ) -> Result<(), JournalError> {
        let err = |e: tokio_postgres::Error| JournalError::postgres("heartbeat", &e);
        client
            .execute(
                &format!(
                    "INSERT INTO instances (id, started_at, seen_at, holds_role, version)
                     VALUES ($1, {DB_NOW}, {DB_NOW}, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET seen_at = {DB_NOW}, holds_role = $2, version = $3"
                ),
                &[&&*self.instance, &holds_role, &env!("CARGO_PKG_VERSION")],
            )
            .await
            .map_err(err)?;
        client
            .execute(
                &format!(
                    "UPDATE events SET lease_until = {DB_NOW} + $2 WHERE owner = $1 AND state = 'pending'"
                ),
                &[&&*self.instance, &self.lease_ms],
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The instances with a heartbeat in the last `within_ms` (by the database's clock), by id.
    pub async fn peers(&self, within_ms: i64) -> Result<Vec<Peer>, JournalError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT id, seen_at, holds_role FROM instances WHERE seen_at >= {DB_NOW} - $1 ORDER BY id"),
                &[&within_ms],
            )
            .await
            .map_err(|e| JournalError::postgres("reading the instances", &e))?;
        Ok(rows
            .iter()
            .map(|r| Peer {
                id: r.get(0),
                seen_at: r.get(1),
                holds_role: r.get(2),
            })
            .collect())
    }

    /// Takes (or keeps) the lease on a pending event: `true` when this instance may handle it
    /// now (it holds it, or its holder's lease ran out).
    pub async fn take(&self, event_id: &str) -> Result<bool, JournalError> {
        let client = self.client().await?;
        let n = execute_cached(
                &client,
                &format!(
                    "UPDATE events SET owner = $2, lease_until = {DB_NOW} + $3
                     WHERE id = $1 AND state = 'pending' AND (owner = $2 OR owner IS NULL OR lease_until < {DB_NOW})"
                ),
                &[&event_id, &&*self.instance, &self.lease_ms],
            )
            .await
            .map_err(|e| JournalError::postgres("taking an event", &e))?;
        Ok(n == 1)
    }

    /// Gives up the leases of this instance (at shutdown), so another takes its events at
    /// once instead of after the lease.
    pub async fn release(&self) -> Result<(), JournalError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET lease_until = 0 WHERE owner = $1 AND state = 'pending'",
                &[&&*self.instance],
            )
            .await
            .map_err(|e| JournalError::postgres("releasing leases", &e))?;
        client
            .execute(
                "UPDATE instances SET holds_role = false WHERE id = $1",
                &[&&*self.instance],
            )
            .await
            .map_err(|e| JournalError::postgres("releasing leases", &e))?;
        Ok(())
    }

    /// Takes the slot `key` unless it was taken in the last `window_ms`: `true` when this call
    /// took it. Atomic across instances.
    pub async fn claim_slot(&self, key: &str, window_ms: i64) -> Result<bool, JournalError> {
        let client = self.client().await?;
        let rows = client
            .query(&take_slot(), &[&key, &window_ms])
            .await
            .map_err(|e| JournalError::postgres("claiming", &e))?;
        Ok(!rows.is_empty())
    }
}
