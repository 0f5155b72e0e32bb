//! A real Mosquitto broker per test, on a free port, with its own config file.

use crate::tls::{CertFiles, TestCa};
use crate::wait;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Files the broker uses beside its config: the persistence store of
    /// [`Self::start_persistent`], the password file of [`Self::start_like_infra`].
    kept: Option<tempfile::TempDir>,
}

impl Mosquitto {
    /// Starts a broker that lets anyone connect on 127.0.0.1.
    pub async fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n").await
    }

    /// Starts a broker that also logs each client's connection to a file ([`Self::log`]), e.g.
    /// `New client connected from 127.0.0.1:… as listener-… (p2, c0, k60).`: `p2` is MQTT 3.1.1,
    /// `p5` MQTT 5.
    pub async fn start_logged() -> Mosquitto {
        Self::start_with("allow_anonymous true\nlog_dest file {LOG}\nlog_type notice\n").await
    }

    /// How many clients whose id starts with `prefix` connected so far (from [`Self::log`]).
    pub fn connections(&self, prefix: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {prefix}")))
            .count()
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the broker process: stopped, it keeps its
    /// connections open and answers nothing, the silent broker of a time-out.
    pub async fn freeze(&self, frozen: bool) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .await;
        }
    }

    /// What a broker from [`Self::start_logged`] logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Starts a broker with extra configuration lines (TLS, passwords, ACLs).
    pub async fn start_with(extra_config: &str) -> Mosquitto {
        Self::start_with_globals("", extra_config).await
    }

    /// Like [`Self::start_with`], with general options (e.g. `per_listener_settings true`)
    /// before the first listener.
    pub async fn start_with_globals(globals: &str, extra_config: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let config = format!(
            "{globals}listener {port} 127.0.0.1\npersistence false\nlog_type error\nlog_type warning\n{extra_config}"
        )
        .replace("{LOG}", &dir.path().join("broker.log").display().to_string());
        if extra_config.contains("{LOG}") {
            // Mosquitto started as root drops to the `mosquitto` user before it opens the log.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
            kept: None,
        };
        broker.restart().await;
        broker
    }

    /// Starts a broker with a plain listener (`port`, for test clients) and a TLS listener on
    /// the returned port that presents `server` (no client certificates asked for).
    pub async fn start_with_tls(server: &CertFiles) -> (Mosquitto, u16) {
        let tls_port = crate::free_port();
        let broker = Mosquitto::start_with(&format!(
            "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            server.cert.display(),
            server.key.display(),
        ))
        .await;
        (broker, tls_port)
    }

    /// Starts a broker with a plain listener (`port`, for test clients) and a TLS listener on
    /// the returned port that presents `server` and requires client certificates from `ca`.
    pub async fn start_with_mutual_tls(ca: &TestCa, server: &CertFiles) -> (Mosquitto, u16) {
        let tls_port = crate::free_port();
        let broker = Mosquitto::start_with(&format!(
            "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca.ca_file.display(),
            server.cert.display(),
            server.key.display(),
        ))
        .await;
        (broker, tls_port)
    }

    /// Starts a broker set up as `infra/mosquitto/` describes: a plain listener (`port`, for the
    /// test's own clients) and, on the returned port, a TLS listener presenting `server` that
    /// requires one of `users` (user, password) and applies the repository's ACL.
    pub async fn start_like_infra(server: &CertFiles, users: &[(&str, &str)]) -> (Mosquitto, u16) {
        let secrets = tempfile::tempdir().expect("temp dir");
        let passwd = secrets.path().join("passwd");
        for (user, password) in users {
            let status = std::process::Command::new("mosquitto_passwd")
                .arg("-b")
                .args(if passwd.exists() { vec![] } else { vec!["-c"] })
                .arg(&passwd)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd (package mosquitto)");
            assert!(status.success(), "mosquitto_passwd failed for {user}");
        }
        let acl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/mosquitto/acl");
        let tls_port = crate::free_port();
        let broker = Mosquitto::start_with_globals(
            "per_listener_settings true\n",
            &format!(
                "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
                server.cert.display(),
                server.key.display(),
                passwd.display(),
                acl.display(),
            ),
        )
        .await;
        (broker.keeping(secrets), tls_port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Starts the broker (again) on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `mosquitto` ({e}); install it: apt-get install mosquitto")
            });
        self.child = Some(child);
        let port = self.port;
        wait::until(
            Duration::from_secs(10),
            "mosquitto to listen",
            || async move { wait::port_open(port).await.then_some(()) },
        )
        .await;
    }

    /// Stops the broker (SIGKILL) and waits until its port is closed.
    /// Starts a broker that keeps sessions and queued messages across a graceful restart
    /// ([`Self::restart_gracefully`]), as a production Mosquitto with `persistence true` does.
    pub async fn start_persistent(extra_config: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("persistence dir");
        // Mosquitto started as root drops to the `mosquitto` user before it writes the file.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        Self::start_with(&format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/\n{extra_config}",
            store.display()
        ))
        .await
        .keeping(dir)
    }

    /// Starts a broker with the persistence, queue and size settings of the repository's
    /// `infra/mosquitto/mosquitto.conf` (its TLS listener, passwords and ACL replaced by a plain
    /// anonymous listener, its paths by the test's); [`Self::store`] is its snapshot file.
    pub async fn start_shipped() -> Mosquitto {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../infra/mosquitto/mosquitto.conf");
        let text = std::fs::read_to_string(&shipped).expect("infra/mosquitto/mosquitto.conf");
        const REPLACED: &[&str] = &[
            "listener",
            "protocol",
            "certfile",
            "keyfile",
            "cafile",
            "require_certificate",
            "allow_anonymous",
            "password_file",
            "acl_file",
            "log_dest",
            "persistence_location",
            "per_listener_settings",
        ];
        let kept: String = text
            .lines()
            .filter(|l| {
                let key = l.split_whitespace().next().unwrap_or("");
                !key.starts_with('#') && !REPLACED.contains(&key)
            })
            .map(|l| format!("{l}\n"))
            .collect();

        Self::start_persistent(&kept).await
    }

    /// The persistence snapshot of a broker from [`Self::start_persistent`].
    pub fn store(&self) -> Option<PathBuf> {
        self.kept
            .as_ref()
            .map(|d| d.path().join("store").join("mosquitto.db"))
    }

    fn keeping(mut self, files: tempfile::TempDir) -> Mosquitto {
        self.kept = Some(files);
        self
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it to exit.
    pub async fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let port = self.port;
            wait::until(
                Duration::from_secs(10),
                "mosquitto to stop",
                || async move { (!wait::port_open(port).await).then_some(()) },
            )
            .await;
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// `$MOSQUITTO`, else `mosquitto` on the PATH, else Debian's `/usr/sbin/mosquitto` (not on a
/// normal user's PATH).
fn mosquitto_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}
