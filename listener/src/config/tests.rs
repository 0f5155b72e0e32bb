use super::*;
use qlik_events::Secret;

pub(super) const GOOD: &str = r#"
Butler:
  logLevel: info            # Butler's own keys are ignored
  mqttConfig:
    enable: false             # Butler's general MQTT integration: see butler_integration()
    brokerHost: 10.0.0.5
    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
          broker:
            host: broker.example.com
            port: 8883
            username: listener
            password: ${BROKER_PASSWORD}
          topic:
            subscriptionRoot: qscloud/#
            appReload: qscloud/app/reload
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: acme.eu.qlikcloud.com
          tenantUrl: https://acme.eu.qlikcloud.com
          authType: jwt
          auth:
            jwt:
              token: ${QLIK_API_KEY}
          qlikSenseUrls:
            qmc: https://acme.eu.qlikcloud.com/console
            hub: https://acme.eu.qlikcloud.com/hub
          comment: Production tenant
          alerts: none              # ours: no channel on purpose (tests add them)
          alert:
            teamsNotification:
              reloadAppFailure:
                enable: false
  scriptLog:
    storeOnDisk:
      qsCloud:
        appReloadFailure:
          enable: true
          logDirectory: scriptlogs
  genericUrls:
    - id: ops
      linkText: Operations runbook
      url: https://wiki.example.com/qlik
"#;

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "BROKER_PASSWORD" => Some("br0ker-pa55".into()),
        "QLIK_API_KEY" => Some("eyJhbGciOi.api-key".into()),
        _ => None,
    }
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("/etc/qlik/butler.yaml"), text, &env)
}

#[test]
fn a_butler_config_is_understood() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.broker.host, "broker.example.com");
    assert_eq!(c.broker.port, 8883);
    assert!(c.broker.tls.enable, "TLS is on by default, as in Butler");
    assert_eq!(c.broker.username.as_deref(), Some("listener"));
    assert_eq!(c.broker.password, Some(Secret::new("br0ker-pa55")));
    assert_eq!(c.broker.client_id, "qlik-listener");
    assert_eq!(c.broker.protocol, Protocol::V5);
    assert_eq!(c.subscription_root, "qscloud/#");
    assert_eq!(c.app_reload_topic, "qscloud/app/reload");
    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(t.id, TenantRef::Host("acme.eu.qlikcloud.com".into()));
    assert_eq!(t.tenant_url.as_str(), "https://acme.eu.qlikcloud.com/");
    assert_eq!(t.token, Secret::new("eyJhbGciOi.api-key"));
    assert_eq!(
        t.hub_url.as_deref(),
        Some("https://acme.eu.qlikcloud.com/hub")
    );
    assert_eq!(c.journal_path, Path::new("/etc/qlik/qlik-listener.sqlite"));
    assert_eq!(c.retention_days, 30);
    assert_eq!(
        c.script_log_dir.as_deref(),
        Some(Path::new("/etc/qlik/scriptlogs"))
    );
    let summary = c.summary();
    assert!(
        summary.contains("mqtts://listener:***@broker.example.com:8883"),
        "{summary}"
    );
    assert!(
        !summary.contains("br0ker-pa55") && !summary.contains("api-key"),
        "{summary}"
    );
}

#[test]
fn extensions() {
    let text = GOOD
            .replace("            port: 8883\n", "            port: 1883\n            clientId: relay-1\n            protocolVersion: \"5\"\n            tls:\n              enable: false\n")
            .replace("          enable: true\n          broker:", "          enable: true\n          requireSignature: true\n          broker:")
            .replace("          comment: Production tenant\n", "          comment: Production tenant\n          webhookSecret: s3cret-s3cret-s3cret-s3cret-s3cret\n")
            .replace("  scriptLog:\n", "        tenants:\n          - id: Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG\n            tenantUrl: https://other.us.qlikcloud.com\n            auth: { jwt: { token: literal-token } }\n            webhookSecret: ${QLIK_API_KEY}\n            alerts: none\n  scriptLog:\n")
            + "  qlikCloudListener:\n    journal:\n      path: /var/lib/qlik-listener/journal.sqlite\n      retentionDays: 8\n";
    let c = parse(&text).unwrap();
    assert!(!c.broker.tls.enable);
    assert_eq!(c.broker.port, 1883);
    assert_eq!(c.broker.client_id, "relay-1");
    assert_eq!(c.broker.protocol, Protocol::V5);
    assert!(c.require_signature);
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(
        c.tenants[1].id,
        TenantRef::Id("Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG".into())
    );
    assert_eq!(
        c.tenants[1].path,
        "Butler.qlikSenseCloud.event.mqtt.tenants[0]"
    );
    assert_eq!(
        c.tenants[1].webhook_secret,
        Some(Secret::new("eyJhbGciOi.api-key"))
    );
    assert_eq!(
        c.journal_path,
        Path::new("/var/lib/qlik-listener/journal.sqlite")
    );
    assert_eq!(c.retention_days, 8);
}

/// Each broken config gives the expected message, with the key path.
#[test]
fn broken_configs_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "tenantUrl: https://acme.eu.qlikcloud.com",
            "tenantUrl: acme",
            "Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl: not a URL",
        ),
        (
            "            host: broker.example.com\n",
            "",
            "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.host: missing",
        ),
        (
            "host: broker.example.com",
            "host: mqtts://broker.example.com",
            "broker.host: expected a host name",
        ),
        (
            "port: 8883",
            "port: 99999",
            "broker.port: expected a whole number from 1 to 65535",
        ),
        (
            "port: 8883",
            "port: [1]",
            "broker.port: expected a whole number",
        ),
        (
            "${BROKER_PASSWORD}",
            "${NOT_SET}",
            "broker.password: environment variable NOT_SET is not set",
        ),
        (
            "token: ${QLIK_API_KEY}",
            "token: \"\"",
            "tenant.auth.jwt.token: is empty",
        ),
        (
            "          enable: true\n          broker:",
            "          enable: false\n          broker:",
            "mqttForward.enable: must be true",
        ),
        (
            "subscriptionRoot: qscloud/#",
            "subscriptionRoot: qscloud/#/x",
            "topic.subscriptionRoot: not a valid MQTT topic filter",
        ),
        (
            "authType: jwt",
            "authType: cert",
            "tenant.authType: 'cert' is not supported",
        ),
        (
            "logDirectory: scriptlogs",
            "logDirectory: \"\"",
            "appReloadFailure.logDirectory: is empty",
        ),
        (
            "enable: true\n          logDirectory",
            "enable: yes-please\n          logDirectory",
            "appReloadFailure.enable: expected true or false",
        ),
        (
            "            port: 8883\n",
            "            port: 8883\n            tls:\n              caFile: missing-ca.pem\n",
            "broker.tls.caFile: no such file: /etc/qlik/missing-ca.pem",
        ),
        (
            "            port: 8883\n",
            "            port: 8883\n            protocolVersion: 6\n",
            "broker.protocolVersion: '6' is not 5 or 3.1.1",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "case does not apply: {from}");
        let text = GOOD.replacen(from, to, 1);
        let e = parse(&text).expect_err(expected);
        let msg = e.to_string();
        assert!(msg.contains(expected), "expected {expected:?} in:\n{msg}");
        assert!(msg.starts_with("/etc/qlik/butler.yaml: "), "{msg}");
        assert!(
            !msg.contains("br0ker-pa55") && !msg.contains("api-key"),
            "secret in: {msg}"
        );
    }
}

#[test]
fn topic_filters() {
    assert!(topic_matches("qscloud/#", "qscloud/alerts/x"));
    assert!(topic_matches("#", "anything/at/all"));
    assert!(topic_matches("qscloud/+/reload/#", "qscloud/app/reload/t1"));
    assert!(topic_matches("$share/relay/qscloud/#", "qscloud/a"));
    assert!(!topic_matches(
        "qscloud/#",
        "qlikcloud/alerts/reload-failed"
    ));
    assert!(!topic_matches("qscloud/+", "qscloud/a/b"));
    assert!(!topic_matches("a/b", "a"));
}

#[test]
fn all_mistakes_are_reported_at_once() {
    let text = GOOD
        .replacen(
            "tenantUrl: https://acme.eu.qlikcloud.com",
            "tenantUrl: nope",
            1,
        )
        .replacen("port: 8883", "port: 0", 1);
    let e = parse(&text).unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
}

#[test]
fn not_yaml_or_not_butler() {
    let e = parse("Butler: [unclosed").unwrap_err();
    assert!(e.to_string().contains("(file): not valid YAML"), "{e}");
    let e = parse("Other: {}").unwrap_err();
    assert!(e.to_string().contains("Butler: missing"), "{e}");
    let e = Config::load(Path::new("/nonexistent/butler.yaml"), &env).unwrap_err();
    assert!(
        e.to_string()
            .contains("/nonexistent/butler.yaml: (file): cannot read"),
        "{e}"
    );
}

#[test]
fn console_and_file_channels() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = GOOD.replace(
            "          alert:\n",
            "          alert:\n            consoleNotification:\n              reloadAppFailure: { enable: true }\n            fileNotification:\n              reloadAppFailure: { enable: true, path: out/alerts.jsonl }\n",
        );
    assert_ne!(yaml, GOOD, "the fixture has an alert section");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let errors = Config::load(&path, &|_| Some("x".into())).unwrap_err();
    let err = errors.to_string();
    assert!(
        err.contains("fileNotification.reloadAppFailure.path: no such directory"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let c = Config::load(&path, &|_| Some("x".into())).unwrap();
    let channels = &c.tenants[0].channels;
    let console = channels.iter().find(|c| c.id == "console").unwrap();
    assert_eq!(console.target, Target::Console);
    let file = channels.iter().find(|c| c.id == "file").unwrap();
    assert_eq!(
        file.target,
        Target::File(dir.path().join("out/alerts.jsonl"))
    );
}

/// The schema in the repository is the one the types give (regenerate it with
/// `cargo run -p qlik-listener -- config-schema > listener/config.schema.json`).
#[test]
fn the_shipped_schema_matches_the_types() {
    let shipped = include_str!("../../config.schema.json");
    assert!(
        shipped == schema(),
        "listener/config.schema.json is out of date: regenerate it with `cargo run -p qlik-listener -- config-schema > listener/config.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(shipped).unwrap();
    let tenant = &v["definitions"]["Tenant"]["properties"];
    assert!(
        tenant["tenantUrl"].is_object() && tenant["webhookSecret"].is_object(),
        "{v}"
    );
    assert!(v["definitions"]["ChannelSection"]["properties"]["webhookURL"].is_object());
}

/// A value of the wrong shape names its key, and does not repeat the value: an API key pasted
/// one level too high must not end up in a log.
#[test]
fn a_wrong_shape_names_the_key_and_hides_the_value() {
    let text = GOOD.replace(
        "            jwt:\n              token: ${QLIK_API_KEY}\n",
        "            jwt: eyJhbGciOi.leaked-api-key\n",
    );
    assert_ne!(text, GOOD);
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("Butler.qlikSenseCloud.event.mqtt.tenant.auth.jwt: expected "),
        "{e}"
    );
    assert!(e.contains("found text at line"), "{e}");
    assert!(!e.contains("leaked-api-key"), "{e}");

    let text = GOOD.replace(
        "  genericUrls:\n    - id: ops\n      linkText: Operations runbook\n      url: https://wiki.example.com/qlik\n",
        "  genericUrls: 5\n",
    );
    assert_ne!(text, GOOD);
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("Butler.genericUrls: expected a sequence"), "{e}");
    assert!(e.contains("found a number"), "{e}");
}

/// Found while typing the configuration: a chat channel enabled without its URL was dropped
/// without a word, so its alerts went nowhere.
#[test]
fn an_enabled_channel_without_its_url_is_an_error() {
    let teams = GOOD.replace(
        "                enable: false\n",
        "                enable: true\n",
    );
    let slack = GOOD.replace(
        "          alert:\n",
        "          alert:\n            slackNotification:\n              reloadAppFailure: { enable: true }\n",
    );
    for (key, text) in [("teamsNotification", teams), ("slackNotification", slack)] {
        assert_ne!(text, GOOD);
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "tenant.alert.{key}.reloadAppFailure.webhookURL: missing"
            )),
            "{key}: {e}"
        );
    }
}

/// Each channel kind comes out as its target, with the options it reads.
#[test]
fn channels_are_typed_targets() {
    let text = GOOD.replace(
        "          alert:\n",
        "          alert:\n            slackNotification:\n              reloadAppFailure:\n                enable: true\n                webhookURL: https://hooks.slack.com/services/T/B/x\n                channel: '#qlik'\n                rateLimit: 300\n                alertEnableByTag: { enable: true, tag: alert-me }\n                messageType: basic\n                basicMsgTemplate: 'Failed: {{appName}}'\n            webhookNotification:\n              reloadAppFailure:\n                enable: true\n                urls: [https://a.example.com/x, https://b.example.com/y]\n                secret: ${QLIK_API_KEY}\n            mqttNotification:\n              reloadAppFailure: { enable: true }\n",
    );
    let c = parse(&text).unwrap();
    let ids: Vec<&str> = c.tenants[0]
        .channels
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["slack", "webhook-1", "webhook-2", "mqtt"]);
    let slack = &c.tenants[0].channels[0];
    assert!(matches!(&slack.target, Target::Slack { channel: Some(ch), .. } if ch == "#qlik"));
    assert_eq!(slack.rules.rate_limit_secs, 300);
    assert_eq!(slack.rules.tag.as_deref(), Some("alert-me"));
    assert_eq!(
        slack.message.format,
        Format::Basic("Failed: {{appName}}".into())
    );
    assert!(
        matches!(&c.tenants[0].channels[2].target, Target::Webhook { url, secret: Some(_) } if url.as_str() == "https://b.example.com/y")
    );
    assert_eq!(
        c.tenants[0].channels[3].target,
        Target::Mqtt {
            topic: DEFAULT_ALERT_TOPIC.into()
        }
    );
}

/// Issue #33 item 1: an `alert:` block indented one level too shallow left the tenant without a
/// channel, and `check-config` said OK with a warning. Now an error, naming where the block was
/// found; `alerts: none` says it is meant.
#[test]
fn a_tenant_without_a_channel_is_an_error_that_says_where_the_block_went() {
    let without = GOOD.replace(
        "          alerts: none              # ours: no channel on purpose (tests add them)\n",
        "",
    );
    let e = parse(&without).unwrap_err().to_string();
    assert!(
        e.contains("Butler.qlikSenseCloud.event.mqtt.tenant.alert: no alert channel is enabled"),
        "{e}"
    );
    assert!(e.contains("alerts: none"), "{e}");

    // The block one level too shallow: beside `tenant`, not in it.
    let shallow = without.replace(
        "          alert:\n            teamsNotification:\n              reloadAppFailure:\n                enable: false\n",
        "        alert:\n          teamsNotification:\n            reloadAppFailure:\n              enable: true\n              webhookURL: https://x.example.com/w\n",
    );
    let e = parse(&shallow).unwrap_err().to_string();
    assert!(
        e.contains(
            "Found where the listener does not read it: Butler.qlikSenseCloud.event.mqtt.alert"
        ),
        "{e}"
    );

    // Said on purpose: fine, and nothing to warn about.
    let c = parse(GOOD).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let typo = GOOD.replace("alerts: none ", "alerts: nobody ");
    let e = parse(&typo).unwrap_err().to_string();
    assert!(
        e.contains("tenant.alerts: 'nobody' is not a value here"),
        "{e}"
    );
}

/// Configurations that do nothing are said: a key of ours misspelt or mis-indented, a Windows
/// path that YAML's double quotes mangled. Butler's own sections and keys are not listed.
#[test]
fn configurations_that_do_nothing_are_warned_about() {
    let text = GOOD
        .replace(
            "          alert:\n",
            "          alert:\n            teamNotification:\n              reloadAppFailure: { enable: true }\n            consoleNotification:\n              reloadAppFailure: { enable: true }\n",
        )
        .replace("            port: 8883\n", "            port: 8883\n            keepAlive: 10\n")
        + "  qlikCloudListener:\n    journal:\n      path: \"C:\\new\\tax.sqlite\"\n    reconcil: { intervalSeconds: 60 }\n  influxDb: { hostIP: 10.0.0.1 }\n";
    let c = parse(&text).unwrap();
    let w = c.warnings.join("\n");
    for key in [
        "Butler.qlikSenseCloud.event.mqtt.tenant.alert.teamNotification: not a key the listener knows",
        "mqttForward.broker.keepAlive: not a key",
        "Butler.qlikCloudListener.reconcil: not a key",
        "holds a control character",
    ] {
        assert!(w.contains(key), "{key}: {w}");
    }
    assert!(
        !w.contains("influxDb") && !w.contains("no alert channel"),
        "{w}"
    );
    assert!(
        !w.contains("logLevel"),
        "Butler's own keys are Butler's: {w}"
    );
}

/// Found trying Butler's level names: `logLevel: verbose` was handed to the log filter as a
/// module name, and the listener logged nothing at all.
#[test]
fn log_levels_include_butlers_and_a_wrong_one_is_an_error() {
    let with = |level: &str| format!("{GOOD}  qlikCloudListener:\n    logLevel: {level}\n");
    assert_eq!(
        parse(&with("verbose")).unwrap().log_level.as_deref(),
        Some("debug")
    );
    assert_eq!(
        parse(&with("warn")).unwrap().log_level.as_deref(),
        Some("warn")
    );
    let e = parse(&with("loud")).unwrap_err().to_string();
    assert!(
        e.contains("Butler.qlikCloudListener.logLevel: 'loud' is not a log level"),
        "{e}"
    );
}

/// The minimal configuration the docs start from: its placeholders are named, and filled in
/// it is a working configuration with one tenant and one channel.
#[test]
fn the_minimal_config_works_once_filled_in() {
    let text = include_str!("../../minimal.yaml");
    let e = parse(text).unwrap_err().to_string();
    for key in [
        "broker.host",
        "tenant.id",
        "tenant.tenantUrl",
        "reloadAppFailure.webhookURL",
    ] {
        assert!(
            e.contains(&format!("{key}: still holds a placeholder")),
            "{key}: {e}"
        );
    }
    let filled = text
        .replace("<broker host, e.g. mqtt.example.com>", "broker.example.com")
        .replace(
            "<tenant id, e.g. Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG>",
            "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
        )
        .replace(
            "<https://your-tenant.eu.qlikcloud.com>",
            "https://acme.eu.qlikcloud.com",
        )
        .replace(
            "<the Teams workflow URL>",
            "https://prod.westeurope.logic.azure.com/workflows/x",
        );
    let c = parse(&filled).unwrap();
    assert_eq!(c.tenants.len(), 1);
    assert_eq!(c.tenants[0].channels.len(), 1);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// `requireSignature` needs MQTT 5 (the signature is a user property): with 3.1.1 it would
/// reject every genuine event, so it is a configuration error naming both keys (before:
/// `check-config` said OK).
#[test]
fn require_signature_with_mqtt_3_1_1_is_an_error() {
    let text = GOOD
        .replace("            port: 8883\n", "            port: 8883\n            protocolVersion: \"3.1.1\"\n")
        .replace("          enable: true\n          broker:", "          enable: true\n          requireSignature: true\n          broker:")
        .replace("          comment: Production tenant\n", "          comment: Production tenant\n          webhookSecret: s3cret-s3cret-s3cret-s3cret-s3cret\n");
    let e = parse(&text).expect_err("an error").to_string();
    assert!(
        e.contains("mqttForward.requireSignature: needs MQTT 5 (Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.protocolVersion is 3.1.1"),
        "{e}"
    );
    // Without requireSignature, 3.1.1 is fine.
    let ok = GOOD.replace(
        "            port: 8883\n",
        "            port: 8883\n            protocolVersion: \"3.1.1\"\n",
    );
    assert_eq!(parse(&ok).unwrap().broker.protocol, Protocol::V311);
}

/// A journal shared in PostgreSQL: the URL without a password, the instance id ending the
/// client id, the password masked in the summary; each mistake names its key.
#[test]
fn a_shared_journal() {
    let shared = |lines: &str| {
        GOOD.to_owned() + "  qlikCloudListener:\n    instanceId: qs-node-2\n    journal:\n" + lines
    };
    let c = parse(&shared(
        "      url: postgres://qlik_listener@pg01:5432/qlik_listener?sslmode=require\n      password: ${BROKER_PASSWORD}\n      leaseSeconds: 10\n",
    ))
    .unwrap();
    let s = c.shared_journal.as_ref().expect("shared");
    assert_eq!(s.instance, "qs-node-2");
    assert_eq!(s.lease_secs, 10);
    assert_eq!(c.broker.client_id, "qlik-listener-qs-node-2");
    let summary = c.summary();
    assert!(summary.contains("instance qs-node-2"), "{summary}");
    assert!(!summary.contains("br0ker-pa55"), "{summary}");

    for (lines, key, reason) in [
        (
            "      url: postgres://u:hunter2@pg01/db\n",
            "journal.url",
            "holds a password",
        ),
        (
            "      url: postgres://u@pg01\n",
            "journal.url",
            "names no database",
        ),
        (
            "      url: postgres://u@pg01/db\n      password: x\n      passwordFile: pw.txt\n",
            "journal.passwordFile",
            "not both",
        ),
        (
            "      url: postgres://u@pg01/db\n      leaseSeconds: 1\n",
            "journal.leaseSeconds",
            "from 3 to 600",
        ),
    ] {
        let err = parse(&shared(lines)).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(reason), "{lines}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let err = parse(&shared("      url: postgres://u@pg01/db\n").replace("qs-node-2", "node 2!"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("instanceId"), "{err}");
}

/// Issue #33 item 2: `tenantUrl: https://acme.eu.qlikcloud.com/hub/` was accepted and every
/// "open the app" link in alerts was broken; plain HTTP to a real host said nothing.
#[test]
fn a_tenant_url_with_a_path_is_an_error_and_plain_http_is_warned_about() {
    let with = |url: &str| {
        GOOD.replace(
            "          tenantUrl: https://acme.eu.qlikcloud.com\n",
            &format!("          tenantUrl: {url}\n"),
        )
    };
    let e = parse(&with("https://acme.eu.qlikcloud.com/hub/"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenant.tenantUrl: must be the tenant's address only, without a path: https://acme.eu.qlikcloud.com (not https://acme.eu.qlikcloud.com/hub/)"),
        "{e}"
    );
    assert!(parse(&with("https://acme.eu.qlikcloud.com/?x=1")).is_err());
    assert!(parse(&with("https://acme.eu.qlikcloud.com/"))
        .unwrap()
        .warnings
        .is_empty());

    let w = parse(&with("http://acme.eu.qlikcloud.com"))
        .unwrap()
        .warnings
        .join("\n");
    assert!(
        w.contains("tenant.tenantUrl: http://acme.eu.qlikcloud.com/ is plain HTTP")
            && w.contains("write https://acme.eu.qlikcloud.com"),
        "{w}"
    );
    // A stand-in on this machine is fine.
    let local = parse(&with("http://127.0.0.1:8080")).unwrap();
    assert!(local.warnings.is_empty(), "{:?}", local.warnings);
}

/// Issue #33 item 11: a channel key set where its kind does not read it (Slack's `iconEmoji`
/// under Teams) does nothing: said.
#[test]
fn a_key_of_another_channel_kind_is_warned_about() {
    let text = GOOD.replace(
        "              reloadAppFailure:\n                enable: false\n",
        "              reloadAppFailure:\n                enable: true\n                webhookURL: https://x.example.com/w\n                iconEmoji: \":ghost:\"\n",
    );
    let w = parse(&text).unwrap().warnings.join("\n");
    assert!(
        w.contains(
            "teamsNotification.reloadAppFailure.iconEmoji: does nothing in teamsNotification"
        ),
        "{w}"
    );
}

/// The example per channel in docs/operations.md is a working configuration: seven channels
/// (e-mail with its SMTP server), nothing refused, nothing warned about.
#[test]
fn the_documented_example_per_channel_is_valid() {
    let doc = include_str!("../../../docs/operations.md");
    let start = doc
        .find("## Examples: one per channel")
        .expect("the section");
    let block = &doc[start..];
    let block = &block[block.find("```yaml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let indented: String = block.lines().map(|l| format!("          {l}\n")).collect();
    let text = GOOD
        .replace(
            "          alerts: none              # ours: no channel on purpose (tests add them)\n",
            "",
        )
        .replace(
            "          alert:\n            teamsNotification:\n              reloadAppFailure:\n                enable: false\n",
            &indented,
        )
        + "  emailNotification:\n    smtp: { host: smtp.example.com, port: 587 }\n";
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| {
        env(name).or_else(|| {
            [
                "TEAMS_WORKFLOW_URL",
                "SLACK_WEBHOOK_URL",
                "ALERT_HOOK_SECRET",
            ]
            .contains(&name)
            .then(|| format!("https://hooks.example.com/{name}"))
        })
    };
    let c = Config::parse(&dir.path().join("butler.yaml"), &text, &env).unwrap();
    let ids: Vec<&str> = c.tenants[0]
        .channels
        .iter()
        .map(|ch| ch.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "teams",
            "slack",
            "webhook-1",
            "mqtt",
            "console",
            "file",
            "email"
        ]
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// Each getting-started page's listener configuration is one the listener takes, once its
/// placeholders are filled in as the page says: nothing refused but the files that exist only
/// on the admin's machine (certificates), nothing warned about.
#[test]
fn the_getting_started_configurations_are_valid() {
    let pages = [
        (
            "linux",
            include_str!("../../../docs/getting-started-linux.md"),
        ),
        (
            "windows",
            include_str!("../../../docs/getting-started-aws-windows.md"),
        ),
        (
            "containers",
            include_str!("../../../docs/getting-started-containers.md"),
        ),
    ];
    let fill = [
        (
            "<tenant id: Administration → Settings → Tenant ID>",
            "tenant-0001",
        ),
        ("<your-tenant>.<region>", "acme.eu"),
        ("<your host>", "relay.example.com"),
        (
            "<$Endpoint from step 3, e.g. abc123-ats.iot.eu-west-1.amazonaws.com>",
            "abc123-ats.iot.eu-west-1.amazonaws.com",
        ),
    ];
    let env = |name: &str| {
        env(name).or_else(|| {
            ["TEAMS_WORKFLOW_URL", "QLIK_WEBHOOK_SECRET"]
                .contains(&name)
                .then(|| format!("https://hooks.example.com/{name}-0123456789abcdef0123456789"))
        })
    };
    for (page, doc) in pages {
        let start = doc
            .find("```yaml\nButler:")
            .expect("a listener configuration");
        let block = &doc[start + 8..];
        let mut text = block[..block.find("```").unwrap()].to_owned();
        for (placeholder, value) in fill {
            text = text.replace(placeholder, value);
        }
        assert!(!text.contains('<'), "{page}: a placeholder is left: {text}");
        let dir = tempfile::tempdir().unwrap();
        match Config::parse(&dir.path().join("butler.yaml"), &text, &env) {
            Ok(c) => assert!(c.warnings.is_empty(), "{page}: {:?}", c.warnings),
            Err(e) => {
                let other: Vec<&ConfigError> = e
                    .errors
                    .iter()
                    .filter(|e| !(e.reason.starts_with("no such file")))
                    .collect();
                assert!(other.is_empty(), "{page}: {other:?}");
            }
        }
    }
}
