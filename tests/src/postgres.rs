//! A real PostgreSQL server per test: a throw-away cluster (`initdb`) in a temp dir, started on
//! a free port with Debian's binaries (package `postgresql`), run as the `postgres` user when
//! the tests run as root (PostgreSQL refuses to run as root).
//!
//! Tuned for tests only (`fsync=off`): a kill of the server is a restart here, not a power
//! loss.

use crate::wait;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    /// (uid, gid) to run the server as, when the tests run as root.
    user: Option<(u32, u32)>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
        .1
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user (apt-get install postgresql creates it)")
}

impl Postgres {
    /// Creates a cluster with a database `journal` and starts it.
    pub async fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let running_as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let user = running_as_root.then(|| (id_of("-u"), id_of("-g")));
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let bin = bin_dir();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: crate::free_port(),
            dir,
            bin,
            child: None,
            user,
        };
        pg.restart().await;
        pg.psql("postgres", "CREATE DATABASE journal");
        pg
    }

    /// The URL of the `journal` database (no TLS).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/journal?sslmode=disable",
            self.port
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server again (after [`Self::stop`]) on the same port and data, and waits until
    /// it takes connections.
    pub async fn restart(&mut self) {
        let mut server = Command::new(self.bin.join("postgres"));
        server
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.user {
            server.uid(uid).gid(gid);
        }
        self.child = Some(server.spawn().expect("postgres"));
        let port = self.port;
        let socket_dir = self.dir.path().to_owned();
        wait::until(
            Duration::from_secs(30),
            "PostgreSQL takes connections",
            || {
                let socket_dir = socket_dir.clone();
                async move {
                    let ok = Command::new("psql")
                        .arg("-h")
                        .arg(&socket_dir)
                        .args([
                            "-p",
                            &port.to_string(),
                            "-U",
                            "postgres",
                            "-d",
                            "postgres",
                            "-Atc",
                            "SELECT 1",
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    ok.then_some(())
                }
            },
        )
        .await;
    }

    /// Stops the server at once (SIGKILL of the postmaster: its connections drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // The backends go away with the postmaster; the shared memory of a killed
            // postmaster is cleaned up at the next start.
            let pid_file = self.data().join("postmaster.pid");
            let _ = std::fs::remove_file(pid_file);
        }
    }

    /// Stops the server cleanly (SIGINT: fast shutdown, connections are closed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Runs `sql` on `database` and returns psql's unaligned output (rows on lines, columns
    /// separated by `|`).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .output()
            .expect("psql (package postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// [`Self::psql`] on the `journal` database.
    pub fn query(&self, sql: &str) -> String {
        self.psql("journal", sql)
    }

    /// The folder of the cluster (for its socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
