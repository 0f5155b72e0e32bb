//! What the listener's integration tests share: a broker, the Qlik Cloud stand-in, a
//! generated Butler config, and ways to read the journal as a user would.
#![allow(dead_code)]

pub mod stream;

use qlik_listener::journal::{Entry, Journal, State};
use relay_tests::fakes::FakeQlikCloud;
use relay_tests::fixtures::{self, SECRET, TENANT};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt;
use relay_tests::process::Running;
use relay_tests::wait;
use std::path::PathBuf;
use std::time::Duration;

/// Lines added to the generated config: under `mqttForward:`, under `broker:`, under the
/// tenant (e.g. its `alert:` section) and under `qlikCloudListener:`.
#[derive(Default)]
pub struct Options<'a> {
    pub forward: &'a str,
    pub broker: &'a str,
    /// What `tenant.id` says (default: the fixtures' tenant id).
    pub tenant_ref: Option<&'a str>,
    pub tenant: &'a str,
    pub listener: &'a str,
    /// Lines under `Butler.mqttConfig:` (default: `enable: false`).
    pub mqtt_config: &'a str,
    /// Top-level sections under `Butler:` (configQRS, cert, restServerConfig, …).
    pub butler: &'a str,
    /// A broker that keeps sessions across graceful restarts (`persistence true`).
    pub persistent_broker: bool,
    /// A broker with the settings of `infra/mosquitto/mosquitto.conf` (persistence included).
    pub shipped_broker: bool,
    /// A broker that logs each connection with its protocol version (`Mosquitto::log`).
    pub logged_broker: bool,
    /// `journal.retentionDays` (default 3650: the fixtures carry fixed dates, and events
    /// older than the retention are refused).
    pub retention_days: Option<u32>,
    /// Lines under `qlikCloudListener.reconcile:` (default `intervalSeconds: 0`, off: its call
    /// at start-up would take faults other tests queue on the Qlik Cloud stand-in).
    pub reconcile: &'a str,
    /// Lines under `qlikCloudListener.webhookWatch:` (default `intervalSeconds: 0`, off, for
    /// the same reason).
    pub webhook_watch: &'a str,
}

/// A tenant's `alert:` block with one webhook channel to `url` (for `Options::tenant`).
pub fn webhook_alert(url: &str) -> String {
    format!(
        "          alert:
            webhookNotification:
              reloadAppFailure:
                enable: true
                urls: [\"{url}\"]
"
    )
}

/// A second tenant (`tenants:` beside `tenant:`, for `Options::tenant` after the first
/// tenant's lines) at `api_url`, alerting on a webhook channel to `alert_url`.
pub fn second_tenant(id: &str, api_url: &str, alert_url: &str) -> String {
    format!(
        "        tenants:
          - id: {id}
            tenantUrl: {api_url}
            auth:
              jwt:
                token: ${{QLIK_TOKEN}}
            webhookSecret: ${{WEBHOOK_SECRET}}
            alert:
              webhookNotification:
                reloadAppFailure:
                  enable: true
                  urls: [\"{alert_url}\"]
"
    )
}

/// `Options::listener` for tests whose failed attempts have no final outcome and must alert at
/// once: `waitForFinalOutcome: never`.
pub const NO_WAIT: &str = "    alerts:\n      waitForFinalOutcome: never\n";

pub const BIN: &str = env!("CARGO_BIN_EXE_qlik-listener");
pub const TOKEN: &str = "qlik-api-key-for-tests-0123456789";
pub const LIMIT: Duration = Duration::from_secs(20);

pub struct Setup {
    pub broker: Mosquitto,
    pub api: FakeQlikCloud,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub async fn new(extra_forward: &str) -> Setup {
        Setup::with(Options {
            forward: extra_forward,
            ..Options::default()
        })
        .await
    }

    pub async fn with(o: Options<'_>) -> Setup {
        let Options {
            forward: extra_forward,
            broker: extra_broker,
            tenant_ref,
            tenant: extra_tenant,
            listener: extra_listener,
            mqtt_config,
            butler: extra_butler,
            persistent_broker,
            shipped_broker,
            logged_broker,
            retention_days,
            reconcile,
            webhook_watch,
        } = o;
        let webhook_watch = if webhook_watch.is_empty() {
            "      intervalSeconds: 0\n"
        } else {
            webhook_watch
        };
        let reconcile = if reconcile.is_empty() {
            "      intervalSeconds: 0\n"
        } else {
            reconcile
        };
        let retention_days = retention_days.unwrap_or(3650);
        let mqtt_config = if mqtt_config.is_empty() {
            "    enable: false\n"
        } else {
            mqtt_config
        };
        let tenant_ref = tenant_ref.unwrap_or(TENANT);
        // A tenant without channels must say so (`alerts: none`): tests about recording alone.
        let channels = extra_tenant.starts_with("          alert:")
            || extra_tenant.contains("\n          alert:");
        let alerts_none = if channels {
            ""
        } else {
            "          alerts: none\n"
        };
        let broker = if logged_broker {
            Mosquitto::start_logged().await
        } else if shipped_broker {
            Mosquitto::start_shipped().await
        } else if persistent_broker {
            Mosquitto::start_persistent("max_queued_messages 100000\n").await
        } else {
            Mosquitto::start().await
        };
        let api = FakeQlikCloud::start(TENANT, TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("butler.yaml");
        let client_id = relay_tests::unique_id("listener");
        let yaml = format!(
            r#"Butler:
  logLevel: info
  mqttConfig:
{mqtt_config}    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
{extra_forward}          broker:
            host: 127.0.0.1
            port: {port}
            clientId: {client_id}
{extra_broker}            tls:
              enable: false
          topic:
            subscriptionRoot: qscloud/#
            appReload: qscloud/app/reload
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: {tenant_ref}
          tenantUrl: {url}
          authType: jwt
          auth:
            jwt:
              token: ${{QLIK_TOKEN}}
          webhookSecret: ${{WEBHOOK_SECRET}}
          qlikSenseUrls:
            qmc: {url}/console
            hub: {url}/hub
          comment: Test tenant
{alerts_none}{extra_tenant}  scriptLog:
    storeOnDisk:
      qsCloud:
        appReloadFailure:
          enable: true
          logDirectory: scriptlogs
  qlikCloudListener:
    journal:
      path: journal.sqlite
      retentionDays: {retention_days}
    reconcile:
{reconcile}    webhookWatch:
{webhook_watch}{extra_listener}{extra_butler}"#,
            port = broker.port,
            url = api.url(),
        );
        std::fs::write(&config, yaml).unwrap();
        Setup {
            broker,
            api,
            dir,
            config,
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QLIK_TOKEN", TOKEN.to_owned()),
            ("WEBHOOK_SECRET", SECRET.to_owned()),
        ]
    }

    /// Starts the listener and waits until it is subscribed (`first`) or connected.
    pub async fn start(&self, first: bool) -> Running {
        let config = self.config.to_str().unwrap().to_owned();
        let mut l = Running::spawn(BIN, &["--config", &config], &self.env());
        let ready = if first {
            "subscribed"
        } else {
            "connected to the broker"
        };
        l.wait_for_output(ready, 1, LIMIT).await;
        l
    }

    pub async fn journal(&self) -> Journal {
        Journal::open(&self.dir.path().join("journal.sqlite"))
            .await
            .unwrap()
    }

    pub async fn publish(&self, topic: &str, body: &[u8]) {
        mqtt::publish(self.broker.port, topic, body, Some(&fixtures::sign(body))).await;
    }

    /// Waits until event `id` is in the journal in `state`.
    pub async fn wait_state(&self, id: &str, state: State) -> Entry {
        let journal = self.journal().await;
        let id = id.to_owned();
        wait::until(
            LIMIT,
            &format!("event {id} to be {}", state.as_str()),
            || {
                let journal = journal.clone();
                let id = id.clone();
                async move { journal.get(&id).await.unwrap().filter(|e| e.state == state) }
            },
        )
        .await
    }

    /// Where the listener stored a reload's script log, in Butler's layout
    /// (`<day>/<time>_appId=…_reloadId=….log`); a path that does not exist when it did not.
    pub fn script_log(&self, app: &str, reload: &str) -> PathBuf {
        let dir = self.dir.path().join("scriptlogs");
        let suffix = format!("_appId={app}_reloadId={reload}.log");
        let found = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|day| {
                std::fs::read_dir(day.path())
                    .ok()?
                    .flatten()
                    .map(|f| f.path())
                    .find(|p| p.to_string_lossy().ends_with(&suffix))
            });
        found.unwrap_or_else(|| dir.join("not-stored").join(suffix))
    }
}

/// A copy of the generated config at `config` for one instance of a group sharing the
/// journal at `url` (PostgreSQL): `instanceId: {id}`, a 3-second lease, and `extra` lines under
/// `qlikCloudListener:` (4 spaces, e.g. its own `metricsListen`). Returns the copy's path.
pub fn instance_config(config: &std::path::Path, id: &str, url: &str, extra: &str) -> PathBuf {
    let yaml = std::fs::read_to_string(config).unwrap();
    let at = yaml.find("    reconcile:\n").expect("the generated config");
    let yaml = format!(
        "{}    instanceId: {id}\n{extra}{}",
        &yaml[..at],
        &yaml[at..]
    )
    .replacen(
        "      path: journal.sqlite\n",
        &format!("      url: {url}\n      leaseSeconds: 3\n"),
        1,
    );
    let path = config.with_file_name(format!("butler-{id}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn event_id(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["id"]
        .as_str()
        .or(v["eventId"].as_str())
        .unwrap()
        .to_owned()
}

pub fn data(entry: &Entry) -> serde_json::Value {
    serde_json::from_str(entry.enrichment.as_deref().expect("enriched")).unwrap()
}

/// The `i`-th of a stream of distinct failed-reload events: CloudEvents for even `i`, legacy
/// for odd, 7 apps, a reload id each. Event ids are `00000000-0000-4000-8000-<12 digits>`: easy to find in any alert body.
pub const ID_PREFIX: &str = "00000000-0000-4000-8000-";

pub fn numbered_failure(i: usize) -> (String, Vec<u8>) {
    let id = format!("{ID_PREFIX}{i:012}");
    let app = format!("4f2c9d1e-7a6b-4c3d-9e8f-{:012}", i % 7);
    let reload = format!("{i:024x}");
    let body = if i.is_multiple_of(2) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json")).unwrap();
        v["id"] = id.clone().into();
        v["toplevelresourceid"] = app.into();
        v["data"]["reloadId"] = reload.into();
        v
    } else {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixtures::event("app-reload-failed.legacy.json")).unwrap();
        v["eventId"] = id.clone().into();
        v["extensions"]["topLevelResourceId"] = app.into();
        v["data"]["reloadId"] = reload.into();
        v
    };
    (id, serde_json::to_vec(&body).unwrap())
}
