//! Butler drop-in: a Butler-style production file (`testdata/butler/production.yaml`: every
//! section a Butler install has, most about Qlik Sense Enterprise), filled in as a user fills in
//! Butler's template and changed in nothing else, with Teams, Slack and e-mail templates written
//! in the style of Butler's (triple braces, `eq`, `{{#each genericUrls}}`, every variable of
//! Butler's context). Against a real Mosquitto, the Qlik Cloud stand-in, HTTP receivers for Teams
//! and Slack and an SMTP server that asks for credentials.

mod common;

use common::{BIN, LIMIT, TOKEN};
use relay_tests::fakes::{FakeQlikCloud, HttpReceiver};
use relay_tests::fixtures::{self, TENANT};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::process::{self, Running};
use relay_tests::smtp::SmtpSink;
use relay_tests::tls::TestCa;
use relay_tests::wait;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SMTP_USER: &str = "relay@example.com";
const SMTP_PASSWORD: &str = "smtp-password-for-tests-0123456789";
const BROKER_PASSWORD: &str = "broker-password-for-tests-0123456789";

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/butler")
        .join(rel)
}

/// Every variable of Butler's context the test templates show (design.md §4), with Butler's
/// meaning where the stand-in's answers fix it.
fn expected(api: &FakeQlikCloud) -> Vec<(&'static str, Option<String>)> {
    let url = api.url();
    let s = |v: &str| Some(v.to_owned());
    vec![
        ("tenantId", s(TENANT)),
        ("tenantComment", s("Production tenant")),
        ("tenantUrl", Some(url.clone())),
        ("userId", s("65a1f0c2e4b0d1a2b3c4d5e6")),
        ("userName", s("Ada Lovelace")),
        ("appId", s("c2d3e4f5-a6b7-4c8d-9e0f-112233445566")),
        ("appName", s("App c2d3e4f5-a6b7-4c8d-9e0f-112233445566")),
        ("appDescription", s("Demo app")),
        (
            "appUrl",
            Some(format!(
                "{url}/sense/app/c2d3e4f5-a6b7-4c8d-9e0f-112233445566"
            )),
        ),
        ("appHasSectionAccess", s("false")),
        ("appIsPublished", s("true")),
        ("appPublishTime", s("2026-10-01T09:00:00.000Z")),
        (
            "appThumbnail",
            s("/api/v1/apps/c2d3e4f5-a6b7-4c8d-9e0f-112233445566/media/files/thumbnail.png"),
        ),
        ("reloadTrigger", s("chronos")),
        ("source", s("com.qlik/engine")),
        ("eventType", s("com.qlik.v1.app.reload.finished")),
        ("eventTypeVersion", s("1.0.0")),
        ("endedWithMemoryConstraint", s("false")),
        ("isDirectQueryMode", s("false")),
        ("isPartialReload", s("false")),
        ("isSessionApp", s("false")),
        ("isSkipStore", s("false")),
        // Butler's numbers, formatted as Node.js formats them.
        ("peakMemoryBytes", s("20,971,520")),
        ("reloadId", s("66d63a0f9b8c7d6e5f4a3b2d")),
        ("rowLimit", s("0")),
        ("status", s("error")),
        ("usageDuration", s("3120")),
        ("sizeMemoryBytes", s("1,048,576")),
        ("appFileSize", s("52,428,800")),
        ("errorCode", s("EngineReloadFailed")),
        // Butler's: the reloads API's status, not the event's.
        ("executionStatusText", s("FAILED")),
        // Butler's: lines of the script log, and its characters.
        ("scriptLogSize", s("8")),
        ("scriptLogSizeRows", s("8")),
        ("scriptLogSizeCharacters", s("424")),
        ("qlikSenseQMC", Some(format!("{url}/console"))),
        ("qlikSenseHub", Some(format!("{url}/hub"))),
        ("appOwnerName", s("Ada Lovelace")),
        ("appOwnerUserId", s("65a1f0c2e4b0d1a2b3c4d5e6")),
        (
            "appOwnerPicture",
            s("https://acme.eu.qlikcloud.com/api/v1/users/65a1f0c2e4b0d1a2b3c4d5e6/actions/picture"),
        ),
        ("appOwnerEmail", s("ada@example.com")),
        // Butler's: the reloads API's endTime − startTime (06:14:04.090 → 06:14:52.120).
        ("executionDuration.hours", s("0")),
        ("executionDuration.minutes", s("0")),
        ("executionDuration.seconds", s("48")),
        ("executionStartTime.startTimeUTC", s("2026-11-20T06:14:04.090Z")),
        ("executionStopTime.stopTimeUTC", s("2026-11-20T06:14:52.120Z")),
        (
            "executionCreationTime.creationTimeUTC",
            s("2026-11-20T06:14:01.000Z"),
        ),
        // In the listener's time zone (set by the environment below: Stockholm, UTC+1).
        ("executionStartTime.startTimeLocal1", s("2026-11-20 07:14:04")),
        ("executionStartTime.startTimeLocal2", s("11/20/2026, 7:14:04 AM")),
        ("executionStartTime.startTimeLocal3", s("Nov 20, 2026, 7:14:04 AM")),
        (
            "executionStartTime.startTimeLocal4",
            s("November 20, 2026 at 7:14:04 AM CET"),
        ),
        (
            "executionStartTime.startTimeLocal5",
            s("November 20, 2026 at 7:14:04 AM CET"),
        ),
        ("executionStopTime.stopTimeLocal1", s("2026-11-20 07:14:52")),
        ("executionStopTime.stopTimeLocal2", None),
        ("executionStopTime.stopTimeLocal3", None),
        ("executionStopTime.stopTimeLocal4", None),
        ("executionStopTime.stopTimeLocal5", None),
        (
            "executionCreationTime.creationTimeLocal1",
            s("2026-11-20 07:14:01"),
        ),
        ("executionCreationTime.creationTimeLocal2", None),
        ("executionCreationTime.creationTimeLocal3", None),
        ("executionCreationTime.creationTimeLocal4", None),
        ("executionCreationTime.creationTimeLocal5", None),
    ]
}

/// Checks what a channel showed for each variable; `per_channel` are the configured line counts.
fn check_values(channel: &str, shown: &HashMap<String, String>, api: &FakeQlikCloud, lines: usize) {
    for (name, want) in expected(api) {
        let got = shown
            .get(name)
            .unwrap_or_else(|| panic!("{channel}: {name} not in the message"));
        assert!(!got.is_empty(), "{channel}: {name} is empty");
        if let Some(want) = want {
            assert_eq!(got, &want, "{channel}: {name}");
        }
    }
    for count in ["scriptLogHeadCount", "scriptLogTailCount"] {
        assert_eq!(shown[count], lines.to_string(), "{channel}: {count}");
    }
    // The event's own error (no errorMessage from the API here is the stand-in's).
    assert_eq!(
        shown["errorMessage"], "Field \"Amount\" not found",
        "{channel}"
    );
}

struct World {
    broker: Mosquitto,
    /// The broker's TLS port, for the Qlik Cloud events (Butler uses TLS there).
    tls_port: u16,
    /// The CA of the broker's certificate, trusted as a system root would be.
    ca: TestCa,
    api: FakeQlikCloud,
    teams: HttpReceiver,
    slack: HttpReceiver,
    smtp: SmtpSink,
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "broker");
        let server = ca.issue("broker", &["localhost", "127.0.0.1"]);
        let (broker, tls_port) = Mosquitto::start_with_tls(&server).await;
        let api = FakeQlikCloud::start(TENANT, TOKEN).await;
        // The webhook the watchdog looks for is there and healthy, as after `webhook register`.
        api.add_webhook(serde_json::json!({
            "name": "qlik-cloud-mqtt-relay", "url": "https://relay.example.com/webhook",
            "enabled": true, "eventTypes": ["com.qlik.v1.app.reload.finished"],
        }));
        let teams = HttpReceiver::start().await;
        let slack = HttpReceiver::start().await;
        let smtp = SmtpSink::start().await;
        let file = dir.path().join("production.yaml");
        std::fs::copy(testdata("production.yaml"), &file).unwrap();
        World {
            broker,
            tls_port,
            ca,
            api,
            teams,
            slack,
            smtp,
            dir,
            file,
        }
    }

    /// The values a user fills in, for each placeholder of the file.
    fn fill(&self) {
        let ca = TestCa::new(self.dir.path(), "qlik-sense");
        let client = ca.issue("client", &["client"]);
        let templates = testdata("templates");
        let port = self.broker.port.to_string();
        let values: Vec<(&str, String)> = vec![
            ("<IP of MQTT broker>", "127.0.0.1".into()),
            ("<MQTT broker port>", port),
            (
                "<host of the MQTT broker for Qlik Cloud events>",
                "localhost".into(),
            ),
            (
                "<port of the MQTT broker for Qlik Cloud events>",
                self.tls_port.to_string(),
            ),
            ("<username>", "listener".into()),
            ("<password>", "${BROKER_PASSWORD}".into()),
            ("<Qlik Cloud tenant ID>", TENANT.into()),
            ("<Qlik Cloud tenant URL>", self.api.url()),
            ("<JWT token>", "${QLIK_TOKEN}".into()),
            (
                "<URL to QMC in Qlik Sense Cloud>",
                format!("{}/console", self.api.url()),
            ),
            (
                "<URL to Hub in Qlik Sense Cloud>",
                format!("{}/hub", self.api.url()),
            ),
            (
                "<web hook URL from MS Teams>",
                self.teams.url("/workflows/teams"),
            ),
            (
                "<web hook URL from Slack>",
                self.slack.url("/services/T0/B0/X"),
            ),
            (
                "<path to Teams template>",
                templates
                    .join("teams-failed-reload-qscloud.handlebars")
                    .display()
                    .to_string(),
            ),
            (
                "<path to Slack template>",
                templates
                    .join("slack-failed-reload-qscloud.handlebars")
                    .display()
                    .to_string(),
            ),
            (
                "<directory of e-mail templates>",
                templates.display().to_string(),
            ),
            ("<Email address 1>", "ops@example.com".into()),
            ("<Email address 2>", "qlik-admins@example.com".into()),
            ("<SMTP server>", "127.0.0.1".into()),
            ("<SMTP port>", self.smtp.addr.port().to_string()),
            ("<SMTP server name>", "localhost".into()),
            ("<SMTP user>", SMTP_USER.into()),
            ("<SMTP password>", "${SMTP_PASSWORD}".into()),
            ("<path to script logs>", "scriptlogs".into()),
            ("<Qlik Sense server>", "sense.example.com".into()),
            (
                "<FQDN or IP of Sense server where QRS is running>",
                "sense.example.com".into(),
            ),
            (
                "<path/to/cert/client.pem>",
                client.cert.display().to_string(),
            ),
            (
                "<path/to/cert/client_key.pem>",
                client.key.display().to_string(),
            ),
            ("<path/to/cert/root.pem>", ca.ca_file.display().to_string()),
            (
                "<URL of the runbook>",
                "https://wiki.example.com/qlik/runbook".into(),
            ),
        ];
        let mut text = std::fs::read_to_string(&self.file).unwrap();
        for (placeholder, value) in values {
            assert!(
                text.contains(placeholder),
                "{placeholder} is not in the file"
            );
            text = text.replace(placeholder, &value);
        }
        std::fs::write(&self.file, text).unwrap();
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QLIK_TOKEN", TOKEN.to_owned()),
            ("BROKER_PASSWORD", BROKER_PASSWORD.to_owned()),
            ("SMTP_PASSWORD", SMTP_PASSWORD.to_owned()),
            // The machine's time zone, as Butler's local times use it.
            ("TZ", "Europe/Stockholm".to_owned()),
            // The broker's CA as one of the machine's roots (rustls-native-certs reads it).
            ("SSL_CERT_FILE", self.ca.ca_file.display().to_string()),
        ]
    }
}

#[tokio::test]
async fn check_config_names_what_to_fill_in_and_accepts_the_file_once_filled() {
    let w = World::start().await;
    let config = w.file.to_str().unwrap().to_owned();
    let (code, out) = process::run(BIN, &["check-config", "--config", &config], &w.env()).await;
    assert_ne!(code, Some(0), "{out}");
    for key in [
        "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.host",
        "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.port",
        "Butler.qlikSenseCloud.event.mqtt.tenant.id",
        "Butler.qlikSenseCloud.event.mqtt.tenant.auth.jwt.token",
        "Butler.qlikSenseCloud.event.mqtt.tenant.alert.teamsNotification.reloadAppFailure.webhookURL",
        "Butler.cert.clientCert",
    ] {
        assert!(
            out.contains(&format!("{key}: still holds a placeholder")),
            "{key}: {out}"
        );
    }

    w.fill();
    let (code, out) = process::run(BIN, &["check-config", "--config", &config], &w.env()).await;
    assert_eq!(code, Some(0), "{out}");
    // Butler's features the file enables that the listener does not provide are named; here
    // none of them is on (as in Butler's template), so none is listed.
    assert!(
        !out.contains("is enabled: the listener does not provide it"),
        "{out}"
    );
    assert!(out.contains("task starts:"), "{out}");
    // Butler's own templates use only variables the listener provides.
    assert!(
        !out.contains("is not a variable of the alert data"),
        "{out}"
    );
}

#[tokio::test]
async fn butlers_file_and_templates_give_butlers_alerts_with_every_variable() {
    let w = World::start().await;
    w.fill();
    let config = w.file.to_str().unwrap().to_owned();
    let mut listener = Running::spawn(BIN, &["--config", &config], &w.env());
    listener
        .wait_for_output("subscribed filter=qscloud/#", 1, LIMIT)
        .await;

    // Butler's gateway topic, unsigned (the file sets no webhookSecret, as Butler's has none).
    // A failure that happens now (the journal refuses events older than its retention).
    let mut event: Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.legacy.json")).unwrap();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let stamp = |f: &str| {
        let f = time::format_description::parse_borrowed::<2>(f).unwrap();
        now.format(&f).unwrap()
    };
    event["eventTime"] = Value::String(stamp("[year]-[month]-[day]T[hour]:[minute]:[second]Z"));
    let body = serde_json::to_vec(&event).unwrap();
    relay_tests::mqtt::publish(w.broker.port, "qscloud/app/reload", &body, None).await;

    wait::until(LIMIT, "Teams, Slack and both e-mails", || {
        let done = w.teams.delivered().len() == 1
            && w.slack.delivered().len() == 1
            && w.smtp.mails().len() == 2;
        async move { done.then_some(()) }
    })
    .await;

    // Teams: the workflow message, valid JSON, every fact filled.
    let teams: Value = serde_json::from_slice(&w.teams.delivered()[0].body).unwrap();
    let body = &teams["attachments"][0]["content"]["body"];
    let facts: HashMap<String, String> = body[1]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    check_values("teams", &facts, &w.api, 5);
    // The script log keeps its lines, quotes and backslashes (Butler pre-escapes them for its
    // triple braces; here they stay valid JSON with the same text). Its lines are separated by
    // a blank line, so that Teams shows them as lines (Butler's single line breaks are spaces
    // in Adaptive Card Markdown: one run-on paragraph).
    let head = body[3]["text"].as_str().unwrap();
    let shown_lines = head.split("\n\n").filter(|l| !l.contains('\n')).count();
    assert_eq!(shown_lines, 5, "{head:?}");
    let tail = body[5]["text"].as_str().unwrap();
    assert!(
        tail.contains("Error: Field \"Amount\" not found \\ (see `Orders`)"),
        "{tail}"
    );
    let actions = body.as_array().unwrap().last().unwrap()["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        actions.last().unwrap()["title"],
        "Reload failure runbook (What to do when a reload fails)"
    );

    // Slack: blocks, every field filled, Slack's routing options from the file.
    let slack: Value = serde_json::from_slice(&w.slack.delivered()[0].body).unwrap();
    let fields: HashMap<String, String> = slack["blocks"][2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let text = f["text"].as_str().unwrap();
            let (name, value) = text.split_once(": ").unwrap();
            (name.trim_matches('*').to_owned(), value.to_owned())
        })
        .collect();
    check_values("slack", &fields, &w.api, 10);
    assert_eq!(slack["channel"], "qlik-sense-cloud-reload-failure");
    assert_eq!(slack["username"], "Qlik Sense Cloud");
    assert_eq!(slack["icon_emoji"], ":ghost:");

    // E-mail: one per recipient, over an authenticated SMTP session, Butler's subject and the
    // HTML template from bodyFileDirectory.
    let mails = w.smtp.mails();
    let mut to: Vec<_> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["ops@example.com", "qlik-admins@example.com"]);
    let mail = &mails[0];
    assert_eq!(
        mail.auth,
        Some((SMTP_USER.to_owned(), SMTP_PASSWORD.to_owned()))
    );
    assert!(
        mail.from.contains("qliksense-noreply@example.com"),
        "{}",
        mail.from
    );
    let subject = mail.header("subject").unwrap_or_default();
    assert!(
        subject.contains("Qlik Sense Cloud reload failed") || subject.starts_with("=?"),
        "{subject}"
    );
    let html = mail.body();
    let rows: HashMap<String, String> = html
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("<tr><td>")?;
            let (name, rest) = rest.split_once("</td><td class=\"value\">")?;
            let value = rest.strip_suffix("</td></tr>")?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    // HTML-escaped as Butler's e-mail templates are.
    let rows = rows
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.replace("&quot;", "\"")
                    .replace("&amp;", "&")
                    .replace("&#x3D;", "="),
            )
        })
        .collect();
    check_values("e-mail", &rows, &w.api, 15);

    // The script log is on disk in Butler's layout.
    let day = w
        .dir
        .path()
        .join("scriptlogs")
        .join(stamp("[year]-[month]-[day]"));
    let names: Vec<String> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [format!(
            "{}_appId=c2d3e4f5-a6b7-4c8d-9e0f-112233445566_reloadId=66d63a0f9b8c7d6e5f4a3b2d.log",
            stamp("[year]-[month]-[day]T[hour]-[minute]-[second]")
        )]
    );

    // No secret reached the log.
    let log = listener.output().join("\n");
    for secret in [TOKEN, SMTP_PASSWORD, BROKER_PASSWORD] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
}
