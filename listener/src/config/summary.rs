//! What `check-config` shows: the configuration in a few lines, secrets masked, and what is
//! wrong with the file's permissions.

use super::{Config, Protocol, TenantRef, WaitForFinal};
use std::path::Path;

impl Config {
    /// What is wrong with `file`'s permissions, as ssh says of a private key: other users can
    /// change it (and so redirect alerts and tasks), or read the secrets written in it. Empty
    /// on Windows, where a file's ACL is not checked.
    pub fn file_warnings(&self, file: &Path) -> Vec<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let Ok(meta) = std::fs::metadata(file) else {
                return Vec::new();
            };
            let mode = meta.permissions().mode() & 0o777;
            let mut warnings = Vec::new();
            if mode & 0o022 != 0 {
                warnings.push(format!(
                    "{} is writable by other users (mode {mode:04o}): anyone who can change it can redirect alerts and start tasks; chmod go-w it",
                    file.display()
                ));
            }
            if mode & 0o004 != 0 && !self.literal_secrets.is_empty() {
                warnings.push(format!(
                    "{} holds secrets ({}) and is readable by every user (mode {mode:04o}): chmod o-r it, or write them as ${{ENV_VAR}}",
                    file.display(),
                    self.literal_secrets.join(", ")
                ));
            }
            // A folder others can write lets them replace the file (a new file, any mode),
            // unless the sticky bit keeps them to their own files.
            let dir = file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Ok(dir_meta) = std::fs::metadata(dir) {
                let dir_mode = dir_meta.permissions().mode() & 0o7777;
                if dir_mode & 0o002 != 0 && dir_mode & 0o1000 == 0 {
                    warnings.push(format!(
                        "{} is in {}, which every user can write (mode {dir_mode:04o}): anyone can replace the file and so redirect alerts and start tasks; keep it in a folder only its owner can write (or chmod +t the folder)",
                        file.display(),
                        dir.display(),
                    ));
                }
            }
            warnings
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            Vec::new()
        }
    }

    /// What would stop the listener at start that the file alone does not show: the SQLite
    /// journal's folder must exist and be writable by this user (under the shipped systemd
    /// unit only `/var/lib/qlik-listener` is). Each problem names its key.
    pub fn local_problems(&self) -> Vec<String> {
        if self.shared_journal.is_some() {
            return Vec::new();
        }
        journal_writable(&self.journal_path)
            .err()
            .map(|e| format!("Butler.qlikCloudListener.journal.path: {e}"))
            .into_iter()
            .collect()
    }

    /// A human summary for `check-config`, with secrets masked.
    pub fn summary(&self) -> String {
        let b = &self.broker;
        let scheme = if b.tls.enable { "mqtts" } else { "mqtt" };
        let user = match (&b.username, &b.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        let mut out = format!(
            "config file:   {}\nbroker:        {scheme}://{user}{}:{} (MQTT {}, client id {}{}{})\n",
            self.file.display(),
            b.host,
            b.port,
            match b.protocol {
                Protocol::V5 => "5",
                Protocol::V311 => "3.1.1",
            },
            b.client_id,
            if b.tls.cert_file.is_some() { ", client certificate" } else { "" },
            if b.tls.insecure_skip_verify { ", CERTIFICATE VERIFICATION OFF" } else { "" },
        );
        out += &format!(
            "subscription:  {} (app reloads on {})\nsignatures:    {}\n",
            self.subscription_root,
            self.app_reload_topic,
            if self.require_signature {
                "required (qlik-signature user property)"
            } else {
                "not checked"
            }
        );
        for t in &self.tenants {
            let id = match &t.id {
                TenantRef::Id(id) => id.clone(),
                TenantRef::Host(h) => format!("{h} (host name; id resolved at start-up)"),
            };
            out += &format!(
                "tenant:        {id} at {} (token ***{})\n",
                t.tenant_url,
                match (&t.webhook_secret, &t.webhook_secret_previous) {
                    (Some(_), Some(_)) => ", webhook secret *** and previous ***",
                    (Some(_), None) => ", webhook secret ***",
                    _ => "",
                }
            );
            if !t.channels.is_empty() {
                let ids: Vec<&str> = t.channels.iter().map(|c| c.id.as_str()).collect();
                out += &format!("alerts:        {}\n", ids.join(", "));
            }
        }
        let journal = match &self.shared_journal {
            Some(shared) => format!(
                "{} (shared: instance {}, lease {} s{})",
                shared.url,
                shared.instance,
                shared.lease_secs,
                if shared.password.is_some() {
                    ", password ***"
                } else {
                    ""
                }
            ),
            None => self.journal_path.display().to_string(),
        };
        out += &format!(
            "journal:       {journal} (kept {} days)\nscript logs:   {}\n",
            self.retention_days,
            self.script_log_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "not stored".into())
        );
        let f = &self.final_outcome;
        out += &format!(
            "one alert per reload: a failed attempt waits for the final outcome {} (up to {} s)\n",
            match f.wait {
                WaitForFinal::Auto => "once the tenant has sent one",
                WaitForFinal::Always => "always",
                WaitForFinal::Never => "never",
            },
            f.wait_secs
        );
        out += &match &self.reconcile {
            Some(r) => format!(
                "reconciliation: every {} s (first start looks back {} h, leaves the last {} s to the webhook)\n",
                r.interval.as_secs(),
                r.look_back.as_secs() / 3600,
                r.grace.as_secs()
            ),
            None => "reconciliation: off\n".into(),
        };
        out += &match &self.webhook_watch {
            Some(w) => format!(
                "webhook watch: {} every {} s\n",
                w.id.as_deref().unwrap_or(&w.name),
                w.interval.as_secs()
            ),
            None => "webhook watch: off\n".into(),
        };
        out += &format!(
            "task starts:   {}\nHTTP API:      {}\n",
            match &self.butler_mqtt {
                Some(b) => format!(
                    "on ({} on {}:{})",
                    b.task_start_topic, b.broker.host, b.broker.port
                ),
                None => "off".into(),
            },
            match &self.rest {
                Some(r) => format!("on ({}://{})", r.scheme(), r.address()),
                None => "off".into(),
            }
        );
        for note in &self.notes {
            out += &format!("note:          {note}\n");
        }
        for warning in &self.warnings {
            out += &format!("WARNING:       {warning}\n");
        }
        out
    }
}

/// Whether the journal at `path` can be opened for writing, or created: tried for real (a file
/// created and removed beside it), as permissions alone do not tell (ACLs, read-only mounts,
/// systemd's `ProtectSystem`).
fn journal_writable(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{} cannot be written by this user ({e})", path.display()));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "the folder {} does not exist: create it (writable by the listener's user) or point journal.path elsewhere",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".qlik-listener-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "the listener cannot create its journal in {} ({e}): give the listener's user write access to it, or set journal.path to a folder it can write (under the shipped systemd unit: /var/lib/qlik-listener/journal.sqlite)",
            dir.display()
        )),
    }
}
