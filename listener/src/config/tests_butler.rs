//! The configuration's Butler side: Butler's own broker, the QRS API, the HTTP API, one file
//! shared with Butler, and what Butler's template leaves to fill in.

use super::tests::{env, parse, GOOD};
use super::*;

#[test]
fn butler_integration() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["client.pem", "client_key.pem", "root.pem"] {
        std::fs::write(dir.path().join(f), "-").unwrap();
    }
    let file = dir.path().join("butler.yaml");
    let text = GOOD.replace("    enable: false             # Butler's general MQTT integration: see butler_integration()\n    brokerHost: 10.0.0.5\n",
            "    enable: true\n    brokerHost: 10.0.0.5\n    brokerPort: 1883\n    subscriptionRootTopic: qliksense/#\n    taskStartTopic: qliksense/start_task\n    taskAllowList: [f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b]\n")
            + "  configQRS:\n    host: sense.example.com\n    port: 4242\n    useSSL: true\n    headers:\n      static:\n        - name: X-Qlik-User\n          value: UserDirectory=INTERNAL; UserId=sa_api\n  cert:\n    clientCert: client.pem\n    clientCertKey: client_key.pem\n    clientCertCA: root.pem\n  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 8081\n  restServerEndpointsEnable:\n    mqttPublishMessage: true\n";
    let c = Config::parse(&file, &text, &env).unwrap();
    let b = c.butler_mqtt.unwrap();
    assert_eq!(
        (b.broker.host.as_str(), b.broker.port, b.broker.tls.enable),
        ("10.0.0.5", 1883, false)
    );
    assert_eq!(b.task_start_topic, "qliksense/start_task");
    assert_eq!(b.status_topic, "qlik-listener/status");
    assert_eq!(
        b.task_allow_list,
        Some(vec!["f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned()])
    );
    let q = c.qrs.unwrap();
    assert_eq!(q.base_url.as_str(), "https://sense.example.com:4242/");
    assert_eq!(
        q.headers,
        vec![(
            "X-Qlik-User".to_owned(),
            "UserDirectory=INTERNAL; UserId=sa_api".to_owned()
        )]
    );
    assert_eq!(q.ca_cert, Some(dir.path().join("root.pem")));
    let r = c.rest.unwrap();
    assert_eq!(r.address(), "127.0.0.1:8081");
    assert!(r.publish_enabled);

    let broken = text
        .replace(
            "taskStartTopic: qliksense/start_task",
            "taskStartTopic: other/start_task",
        )
        .replace("useSSL: true", "useSSL: false");
    let e = Config::parse(&file, &broken, &env).unwrap_err().to_string();
    assert!(e.contains("Butler.mqttConfig.taskStartTopic: 'other/start_task' does not lie under subscriptionRootTopic"), "{e}");
    assert!(e.contains("Butler.configQRS.useSSL: must be true"), "{e}");
    let no_certs = text.replace("  cert:\n    clientCert: client.pem\n    clientCertKey: client_key.pem\n    clientCertCA: root.pem\n", "");
    let e = Config::parse(&file, &no_certs, &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Butler.cert.clientCert: missing"), "{e}");
}

/// Found while typing the configuration: problems with Butler's own broker were reported
/// under the events broker's keys (`mqttForward.broker.tls…`).
#[test]
fn the_butler_broker_is_named_by_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["client.pem", "client_key.pem", "not-a-ca.pem"] {
        std::fs::write(dir.path().join(f), "-").unwrap();
    }
    let file = dir.path().join("butler.yaml");
    let text = GOOD.replace(
        "    enable: false             # Butler's general MQTT integration: see butler_integration()\n",
        "    enable: true\n    tls: { enable: true, caFile: not-a-ca.pem }\n",
    ) + "  configQRS: { host: sense.example.com }\n  cert: { clientCert: client.pem, clientCertKey: client_key.pem }\n";
    let c = Config::parse(&file, &text, &env).unwrap();
    let broker = &c.butler_mqtt.unwrap().broker;
    assert_eq!(broker.key("tls.caFile"), "Butler.mqttConfig.tls.caFile");
    let e = crate::subscriber::tls_config(broker)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Butler.mqttConfig.tls.caFile"), "{e}");
    assert!(!e.contains("mqttForward"), "{e}");
}

/// Found with Butler's production template: a file still holding its `<…>` placeholders was
/// "configuration OK". Each is named, without repeating a value that may be a secret.
#[test]
fn placeholders_left_in_are_named() {
    let text = GOOD
        .replace("token: ${QLIK_API_KEY}", "token: <JWT token>")
        .replace("username: listener", "username: <username>")
        .replace("password: ${BROKER_PASSWORD}", "password: <password>")
        .replace(
            "tenantUrl: https://acme.eu.qlikcloud.com",
            "tenantUrl: <tenant url>",
        );
    let e = parse(&text).unwrap_err().to_string();
    for key in [
        "tenant.auth.jwt.token",
        "broker.username",
        "broker.password",
        "tenant.tenantUrl",
    ] {
        assert!(
            e.contains(&format!("{key}: still holds a placeholder")),
            "{key}: {e}"
        );
    }
    assert!(!e.contains("JWT token"), "{e}");
}

/// One file for Butler and the listener: with `besideButler`, the listener leaves task starts
/// and the HTTP API to Butler (neither is even set up), e-mail follows Butler's master switch,
/// and Butler's features the listener lacks are named.
#[test]
fn beside_butler_with_one_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["client.pem", "client_key.pem"] {
        std::fs::write(dir.path().join(f), "-").unwrap();
    }
    let file = dir.path().join("butler.yaml");
    let text = GOOD.replace(
        "    enable: false             # Butler's general MQTT integration: see butler_integration()\n",
        "    enable: true\n",
    ) + "  configQRS: { host: sense.example.com }\n  cert: { clientCert: client.pem, clientCertKey: client_key.pem }\n  restServerConfig: { enable: true, serverPort: 8081 }\n  influxDb: { enable: true }\n  incidentTool: { signl4: { enable: true }, newRelic: { enable: false } }\n  emailNotification:\n    enable: false\n";
    let text = text.replace(
        "          alert:\n",
        "          alert:\n            emailNotification:\n              reloadAppFailure: { enable: true, fromAddress: 'Qlik Sense (no-reply) <noreply@example.com>', recipients: [ops@example.com] }\n",
    );
    let alone = Config::parse(&file, &text, &env).unwrap();
    assert!(alone.butler_mqtt.is_some() && alone.rest.is_some() && alone.qrs.is_some());
    let beside = Config::parse(
        &file,
        &format!("{text}  qlikCloudListener:\n    besideButler: true\n"),
        &env,
    )
    .unwrap();
    assert!(beside.butler_mqtt.is_none() && beside.rest.is_none() && beside.qrs.is_none());
    let summary = beside.summary();
    assert!(summary.contains("task starts:   off"), "{summary}");
    assert!(summary.contains("besideButler is true"), "{summary}");
    // Alone, the listener says that it starts tasks, and how to share the file with Butler.
    let notes = alone.notes.join("\n");
    assert!(
        notes.contains("Butler.mqttConfig.enable is true: the listener starts Qlik Sense tasks"),
        "{notes}"
    );
    assert!(!beside.notes.join("\n").contains("starts Qlik Sense tasks"));
    for c in [&alone, &beside] {
        assert!(c.tenants[0].channels.iter().all(|ch| ch.id != "email"));
        assert!(
            c.smtp.is_none(),
            "no SMTP server needed while e-mail is off"
        );
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("Butler.emailNotification.enable is false"),
            "{notes}"
        );
        assert!(notes.contains("Butler.influxDb is enabled"), "{notes}");
        assert!(
            notes.contains("Butler.incidentTool.signl4 is enabled"),
            "{notes}"
        );
        assert!(!notes.contains("newRelic"), "{notes}");
    }
}

/// Butler's `serverHost` may be a host name (the API then answers to it) and its `tls` section
/// turns on HTTPS; missing certificate files are errors naming the key.
#[test]
fn rest_server_host_names_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "-").unwrap();
    let file = dir.path().join("butler.yaml");
    let rest = |host: &str, tls: &str| {
        format!("{GOOD}  restServerConfig:\n    enable: true\n    serverHost: {host}\n    serverPort: 8443\n    backgroundServerPort: 8081\n{tls}")
    };
    let tls =
        "    tls:\n      enable: true\n      cert: cert.pem\n      key: key.pem\n      ca: null\n";
    let e = Config::parse(&file, &rest("butler.example.com", tls), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Butler.restServerConfig.tls.key: no such file"),
        "{e}"
    );
    std::fs::write(dir.path().join("key.pem"), "-").unwrap();
    let c = Config::parse(&file, &rest("Butler.Example.com", tls), &env).unwrap();
    let r = c.rest.unwrap();
    assert_eq!(r.address(), "Butler.Example.com:8443");
    assert_eq!(r.scheme(), "https");
    assert_eq!(r.tls.unwrap().cert, dir.path().join("cert.pem"));
    assert_eq!(r.allowed_hosts, vec!["butler.example.com".to_owned()]);
    let c = Config::parse(&file, &rest("127.0.0.1", ""), &env).unwrap();
    assert_eq!(c.rest.unwrap().scheme(), "http");
    let e = Config::parse(&file, &rest("'not a host'", ""), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "Butler.restServerConfig.serverHost: 'not a host' is not an IP address or a host name"
        ),
        "{e}"
    );
}
