use super::*;

#[test]
fn filters_that_drop_everything_are_named() {
    let filter = |types: &[&str], tenants: &[&str]| FilterConfig {
        event_types: (!types.is_empty()).then(|| types.iter().map(|s| s.to_string()).collect()),
        tenant_ids: (!tenants.is_empty()).then(|| tenants.iter().map(|s| s.to_string()).collect()),
        max_age: None,
    };
    let good = filter(
        &[
            "com.qlik.v1.app.reload.finished",
            "com.qlik.v1.reload.*",
            "com.qlik.*",
            "*",
        ],
        &["Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG"],
    );
    assert_eq!(good.warnings(), Vec::<String>::new());
    let w = filter(
        &[
            "app.reload.finished",
            "com.qlik.v1.app.reload.failed",
            "reload*",
        ],
        &["acme.eu.qlikcloud.com"],
    )
    .warnings();
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(w[0].starts_with("ALLOWED_TENANT_IDS: 'acme.eu.qlikcloud.com' looks like a host name"));
    assert!(w[1].starts_with(
        "ALLOWED_EVENT_TYPES: 'app.reload.finished' matches no Qlik Cloud event type"
    ));
    assert!(w[2].starts_with(
        "ALLOWED_EVENT_TYPES: 'com.qlik.v1.app.reload.failed' is not a reload event type"
    ));
    assert!(w[3].starts_with("ALLOWED_EVENT_TYPES: 'reload*' matches no Qlik Cloud event type"));
}
use std::collections::HashMap;

const SECRET: &str = "a-webhook-secret-of-32-characters!!";

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

fn fails(vars: &[(&str, &str)], var: &str, reason_part: &str) {
    let e = config(vars).expect_err("config should fail");
    assert_eq!(e.var, var, "{e}");
    assert!(e.reason.contains(reason_part), "{e}");
    for (_, v) in vars {
        if v.contains("pa55") || *v == SECRET {
            assert!(!e.to_string().contains(v), "error leaks a secret: {e}");
        }
    }
}

#[test]
fn minimal_mqtt() {
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("MQTT_URL", "mqtt://localhost:1883"),
    ])
    .unwrap();
    assert_eq!(c.secret, SecretSource::Env(Secret::new(SECRET)));
    assert_eq!(c.topic_prefix, "qscloud");
    assert_eq!(c.max_body_bytes, 256 * 1024);
    assert_eq!(c.publish_timeout, Duration::from_secs(5));
    assert_eq!(c.filter, FilterConfig::default());
    assert!(!c.needs_aws());
    let PublisherConfig::Mqtt(m) = c.publisher else {
        panic!()
    };
    assert_eq!(m.protocol, MqttProtocol::V5);
    assert_eq!(m.client_id_prefix, "qlik-webhook");
    let MqttUrlSource::Env(url) = m.url else {
        panic!()
    };
    assert_eq!(
        (url.tls, url.host.as_str(), url.port),
        (false, "localhost", 1883)
    );
}

#[test]
fn mqtts_url_with_credentials() {
    let url = MqttUrl::parse(
        "MQTT_URL",
        "mqtts://relay%40acme:pa55%2Fw0rd@broker.example.com",
    )
    .unwrap();
    assert!(url.tls);
    assert_eq!(url.port, 8883);
    assert_eq!(url.username.as_deref(), Some("relay@acme"));
    assert_eq!(
        url.password.as_ref().map(|p| p.expose()),
        Some(&b"pa55/w0rd"[..])
    );
    assert_eq!(
        url.redacted(),
        "mqtts://relay@acme:***@broker.example.com:8883"
    );
    assert!(!format!("{url:?}").contains("pa55"));
    let v6 = MqttUrl::parse("MQTT_URL", "mqtt://[::1]:1884").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 1884));
}

#[test]
fn bad_urls_name_the_variable_and_hide_the_password() {
    let base = [("QLIK_WEBHOOK_SECRET", SECRET)];
    for (url, part) in [
        ("localhost:1883", "unsupported scheme"),
        ("http://user:pa55@host", "unsupported scheme"),
        ("mqtt://user:pa55@host/path", "no path"),
        ("mqtt://host?x=1", "no path"),
        ("mqtt://:pa55@host", "needs a user name"),
        ("not a url pa55", "not a URL"),
    ] {
        let mut vars = base.to_vec();
        vars.push(("MQTT_URL", url));
        fails(&vars, "MQTT_URL", part);
    }
}

#[test]
fn secret_sources() {
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET_SSM_PARAMETER", "/qlik/secret"),
        ("MQTT_URL", "mqtt://h"),
    ])
    .unwrap();
    assert_eq!(c.secret, SecretSource::Ssm("/qlik/secret".into()));
    assert!(c.needs_aws());
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET_ID", "qlik/webhook"),
        ("MQTT_URL", "mqtt://h"),
    ])
    .unwrap();
    assert_eq!(
        c.secret,
        SecretSource::SecretsManager("qlik/webhook".into())
    );
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("QLIK_WEBHOOK_SECRET_PREVIOUS", "old-secret"),
        ("MQTT_URL", "mqtt://h"),
    ])
    .unwrap();
    assert_eq!(
        c.previous_secret,
        Some(SecretSource::Env(Secret::new("old-secret")))
    );
}

#[test]
fn missing_and_contradictory_settings() {
    fails(
        &[("MQTT_URL", "mqtt://h")],
        "QLIK_WEBHOOK_SECRET",
        "not set",
    );
    fails(
        &[("QLIK_WEBHOOK_SECRET", " "), ("MQTT_URL", "mqtt://h")],
        "QLIK_WEBHOOK_SECRET",
        "not set",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("QLIK_WEBHOOK_SECRET_ID", "x"),
            ("MQTT_URL", "mqtt://h"),
        ],
        "QLIK_WEBHOOK_SECRET",
        "only one of QLIK_WEBHOOK_SECRET, QLIK_WEBHOOK_SECRET_ID",
    );
    fails(
        &[("QLIK_WEBHOOK_SECRET", SECRET)],
        "MQTT_URL",
        "no publisher",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("AWS_IOT_ENDPOINT", "x-ats.iot.eu-west-1.amazonaws.com"),
        ],
        "MQTT_URL",
        "not both",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MQTT_URL_SSM_PARAMETER", "/p"),
        ],
        "MQTT_URL",
        "only one of",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("AWS_IOT_ENDPOINT", "x-ats.iot.eu-west-1.amazonaws.com"),
            ("MQTT_CLIENT_ID", "c"),
        ],
        "MQTT_CLIENT_ID",
        "only applies to MQTT_URL",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            (
                "AWS_IOT_ENDPOINT",
                "https://x-ats.iot.eu-west-1.amazonaws.com",
            ),
        ],
        "AWS_IOT_ENDPOINT",
        "host name",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MQTT_PROTOCOL_VERSION", "6"),
        ],
        "MQTT_PROTOCOL_VERSION",
        "not 5 or 3.1.1",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtts://h"),
            ("MQTT_CA_FILE", "/nonexistent/ca.pem"),
        ],
        "MQTT_CA_FILE",
        "no such file",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MQTT_TOPIC_PREFIX", "qscloud/#"),
        ],
        "MQTT_TOPIC_PREFIX",
        "'#'",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MAX_BODY_BYTES", "12kb"),
        ],
        "MAX_BODY_BYTES",
        "whole number",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MAX_BODY_BYTES", "1"),
        ],
        "MAX_BODY_BYTES",
        "from 1024",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MAX_EVENT_AGE_SECONDS", "-5"),
        ],
        "MAX_EVENT_AGE_SECONDS",
        "whole number",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("PUBLISH_TIMEOUT_MS", "600000"),
        ],
        "PUBLISH_TIMEOUT_MS",
        "to 60000",
    );
}

#[test]
fn certificate_files() {
    let dir = std::env::temp_dir().join(format!("qlik-webhook-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("x.pem");
    std::fs::write(&pem, "-").unwrap();
    let pem = pem.to_str().unwrap();
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtts://h"),
            ("MQTT_CLIENT_CERT_FILE", pem),
        ],
        "MQTT_CLIENT_KEY_FILE",
        "needed with",
    );
    fails(
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("MQTT_CA_FILE", pem),
        ],
        "MQTT_URL",
        "not mqtts://",
    );
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("MQTT_URL", "mqtts://h"),
        ("MQTT_CA_FILE", pem),
        ("MQTT_CLIENT_CERT_FILE", pem),
        ("MQTT_CLIENT_KEY_FILE", pem),
        ("MQTT_CLIENT_ID", "relay"),
        ("MQTT_PROTOCOL_VERSION", "3.1.1"),
    ])
    .unwrap();
    let PublisherConfig::Mqtt(m) = c.publisher else {
        panic!()
    };
    assert_eq!(m.ca_file.as_deref(), Some(pem));
    assert_eq!(m.protocol, MqttProtocol::V311);
    assert_eq!(m.client_id_prefix, "relay");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn iot_core_and_filters() {
    let c = config(&[
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("AWS_IOT_ENDPOINT", "abc123-ats.iot.eu-west-1.amazonaws.com"),
        ("MQTT_TOPIC_PREFIX", "acme/qscloud"),
        (
            "ALLOWED_EVENT_TYPES",
            "com.qlik.v1.app.reload.finished, com.qlik.v1.reload.*,",
        ),
        ("ALLOWED_TENANT_IDS", "t1,t2"),
        ("MAX_EVENT_AGE_SECONDS", "3600"),
        ("MAX_BODY_BYTES", "65536"),
        ("PUBLISH_TIMEOUT_MS", "2500"),
    ])
    .unwrap();
    assert_eq!(
        c.publisher,
        PublisherConfig::IotCore {
            endpoint_url: "https://abc123-ats.iot.eu-west-1.amazonaws.com".into()
        }
    );
    assert!(c.needs_aws());
    assert_eq!(c.topic_prefix, "acme/qscloud");
    assert_eq!(
        c.filter.event_types,
        Some(vec![
            "com.qlik.v1.app.reload.finished".into(),
            "com.qlik.v1.reload.*".into()
        ])
    );
    assert_eq!(c.filter.tenant_ids, Some(vec!["t1".into(), "t2".into()]));
    assert_eq!(c.filter.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(c.max_body_bytes, 65536);
    assert_eq!(c.publish_timeout, Duration::from_millis(2500));

    let c = config(&[
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("AWS_IOT_ENDPOINT_URL", "http://127.0.0.1:5000/"),
    ])
    .unwrap();
    assert_eq!(
        c.publisher,
        PublisherConfig::IotCore {
            endpoint_url: "http://127.0.0.1:5000".into()
        }
    );
}

#[test]
fn butler_output() {
    let base = [
        ("QLIK_WEBHOOK_SECRET", SECRET),
        ("MQTT_URL", "mqtt://localhost"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut vars = base.to_vec();
        vars.extend_from_slice(extra);
        vars
    };
    assert_eq!(config(&base).unwrap().butler, ButlerOutput::Off);
    assert_eq!(
        config(&with(&[("BUTLER_OUTPUT", "off")])).unwrap().butler,
        ButlerOutput::Off
    );
    assert_eq!(
        config(&with(&[("BUTLER_OUTPUT", "replace")]))
            .unwrap()
            .butler,
        ButlerOutput::Replace
    );
    assert_eq!(
        config(&with(&[("BUTLER_OUTPUT", "copy")])).unwrap().butler,
        ButlerOutput::Copy {
            topic_prefix: "butler/qscloud".into()
        }
    );
    assert_eq!(
        config(&with(&[
            ("BUTLER_OUTPUT", "copy"),
            ("BUTLER_TOPIC_PREFIX", "acme/butler")
        ]))
        .unwrap()
        .butler,
        ButlerOutput::Copy {
            topic_prefix: "acme/butler".into()
        }
    );
    fails(
        &with(&[("BUTLER_OUTPUT", "yes")]),
        "BUTLER_OUTPUT",
        "not off, replace or copy",
    );
    fails(
        &with(&[("BUTLER_TOPIC_PREFIX", "b")]),
        "BUTLER_TOPIC_PREFIX",
        "only applies with BUTLER_OUTPUT=copy",
    );
    fails(
        &with(&[("BUTLER_OUTPUT", "replace"), ("BUTLER_TOPIC_PREFIX", "b")]),
        "BUTLER_TOPIC_PREFIX",
        "only applies with BUTLER_OUTPUT=copy",
    );
    for overlapping in ["qscloud", "qscloud/butler"] {
        fails(
            &with(&[
                ("BUTLER_OUTPUT", "copy"),
                ("BUTLER_TOPIC_PREFIX", overlapping),
            ]),
            "BUTLER_TOPIC_PREFIX",
            "overlaps MQTT_TOPIC_PREFIX",
        );
    }
    fails(
        &with(&[
            ("BUTLER_OUTPUT", "copy"),
            ("BUTLER_TOPIC_PREFIX", "acme"),
            ("MQTT_TOPIC_PREFIX", "acme/qscloud"),
        ]),
        "BUTLER_TOPIC_PREFIX",
        "overlaps MQTT_TOPIC_PREFIX",
    );
    fails(
        &with(&[("BUTLER_OUTPUT", "copy"), ("BUTLER_TOPIC_PREFIX", "b/#")]),
        "BUTLER_TOPIC_PREFIX",
        "",
    );
}

/// Issue #33 item 6: a password with `#` in `MQTT_URL` gave "a broker URL has no path or
/// query": the error now says how to write it, without quoting the password.
#[test]
fn a_hash_in_the_broker_password_says_how_to_write_it() {
    let e = MqttUrl::parse("MQTT_URL", "mqtts://relay:s3cr#t@broker.example.com:8883")
        .unwrap_err()
        .to_string();
    assert!(e.contains("MQTT_URL") && e.contains("%23"), "{e}");
    assert!(!e.contains("s3cr"), "the password is not quoted: {e}");
    let ok = MqttUrl::parse("MQTT_URL", "mqtts://relay:s3cr%23t@broker.example.com:8883").unwrap();
    assert_eq!(ok.password.unwrap().expose(), b"s3cr#t");
}
