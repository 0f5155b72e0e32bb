//! The forwarder's settings as environment variables, each described once: the table in docs/forwarder.md
//! and `qlik-webhook config-reference` are generated from [`VARIABLES`], and a test keeps them,
//! and what [`crate::config::Config::from_lookup`] and `serve`'s arguments read, in step.

/// One row of the table: the variable (or variables, when they go together), its default and
/// what it does (Markdown).
pub struct Variable {
    pub names: &'static [&'static str],
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const VARIABLES: &[Variable] = &[
    Variable {
        names: &["QLIK_WEBHOOK_SECRET"],
        default: "—",
        meaning: "the webhook's secret (Qlik generates 32–64 characters). Exactly one of this and the next two.",
    },
    Variable {
        names: &["QLIK_WEBHOOK_SECRET_SSM_PARAMETER"],
        default: "—",
        meaning: "name of an SSM Parameter Store SecureString holding the secret, read once per cold start",
    },
    Variable {
        names: &["QLIK_WEBHOOK_SECRET_ID"],
        default: "—",
        meaning: "Secrets Manager secret id or ARN whose SecretString is the secret",
    },
    Variable {
        names: &["QLIK_WEBHOOK_SECRET_PREVIOUS", "QLIK_WEBHOOK_SECRET_PREVIOUS_SSM_PARAMETER"],
        default: "—",
        meaning: "a second secret accepted too, for rotating without downtime (see below)",
    },
    Variable {
        names: &["MQTT_URL"],
        default: "—",
        meaning: "the broker: `mqtt://host[:1883]` or `mqtts://[user:password@]host[:8883]` (user and password percent-encoded). Exactly one publisher: this, `MQTT_URL_SSM_PARAMETER`, or `AWS_IOT_ENDPOINT`.",
    },
    Variable {
        names: &["MQTT_URL_SSM_PARAMETER"],
        default: "—",
        meaning: "SSM SecureString holding `MQTT_URL`, so its password stays out of the function's configuration",
    },
    Variable {
        names: &["MQTT_CA_FILE"],
        default: "system roots",
        meaning: "PEM CA bundle to verify the broker's certificate (`mqtts://` only)",
    },
    Variable {
        names: &["MQTT_CLIENT_CERT_FILE", "MQTT_CLIENT_KEY_FILE"],
        default: "—",
        meaning: "PEM client certificate and key, for brokers that authenticate clients by certificate",
    },
    Variable {
        names: &["MQTT_CLIENT_ID"],
        default: "`qlik-webhook`",
        meaning: "client id prefix; a random suffix is added so concurrent instances do not take over each other's session",
    },
    Variable {
        names: &["MQTT_PROTOCOL_VERSION"],
        default: "`5`",
        meaning: "`5` or `3.1.1`. MQTT 5 carries the original signature as user property `qlik-signature`, and a publish the broker's ACL denies comes back `NotAuthorized` (503). With 3.1.1 the broker acknowledges a denied publish and drops it, so the forwarder answers 200 for an event nobody receives: it warns at start-up; use 5 where the broker has it. `qlik-webhook check` publishes a test event with the same settings and fails on a denial (MQTT 5, IoT Core) or says it cannot tell (3.1.1).",
    },
    Variable {
        names: &["AWS_IOT_ENDPOINT"],
        default: "—",
        meaning: "publish to AWS IoT Core through its HTTPS data plane: your account's `…-ats.iot.<region>.amazonaws.com` (`aws iot describe-endpoint --endpoint-type iot:Data-ATS`)",
    },
    Variable {
        names: &["AWS_IOT_ENDPOINT_URL"],
        default: "—",
        meaning: "a full endpoint URL instead (VPC endpoints, tests)",
    },
    Variable {
        names: &["MQTT_TOPIC_PREFIX"],
        default: "`qscloud`",
        meaning: "topic prefix (one or more levels, no wildcards)",
    },
    Variable {
        names: &["BUTLER_OUTPUT"],
        default: "`off`",
        meaning: "also give Butler v16 a form it reads (see [Already running Butler?](butler.md)): `copy` publishes a second, rewritten copy under `BUTLER_TOPIC_PREFIX` (for Butler beside our listener); `replace` publishes the rewritten form instead of the raw body (for Butler alone; never in front of our listener with `requireSignature`, which would reject every event: `qlik-webhook check --listener-config` refuses it); `off` the raw body only",
    },
    Variable {
        names: &["BUTLER_TOPIC_PREFIX"],
        default: "`butler/qscloud`",
        meaning: "`BUTLER_OUTPUT=copy` only: the prefix of Butler's copies; must not overlap `MQTT_TOPIC_PREFIX`",
    },
    Variable {
        names: &["ALLOWED_EVENT_TYPES"],
        default: "all",
        meaning: "comma-separated event types to publish; a trailing `*` matches a prefix (`com.qlik.v1.*`)",
    },
    Variable {
        names: &["ALLOWED_TENANT_IDS"],
        default: "all",
        meaning: "comma-separated tenant ids to publish",
    },
    Variable {
        names: &["MAX_EVENT_AGE_SECONDS"],
        default: "off",
        meaning: "refuse (202, not published) events whose time is older than this; replay protection",
    },
    Variable {
        names: &["MAX_BODY_BYTES"],
        default: "`262144`",
        meaning: "larger bodies get 413 (1024 … 16 MiB). 16 MiB is the pipeline's one size limit: the listener records any event up to it, with MQTT 5 and 3.1.1, and the broker must take messages that big plus 64 KiB (with MQTT 5 the forwarder warns at connect when the broker announces a smaller maximum)",
    },
    Variable {
        names: &["PUBLISH_TIMEOUT_MS"],
        default: "`5000`",
        meaning: "how long to wait for the broker's acknowledgement before answering 503 (100 … 60000)",
    },
    Variable {
        names: &["QLIK_WEBHOOK_LISTEN"],
        default: "`127.0.0.1:8080`",
        meaning: "`serve` only: the address (`--listen`)",
    },
    Variable {
        names: &["LOG_FORMAT"],
        default: "`text`",
        meaning: "`serve` only: `text` or `json` (`--log-format`); Lambda always logs JSON",
    },
    Variable {
        names: &["MAX_CONNECTIONS"],
        default: "`512`",
        meaning: "`serve` only (`--max-connections`): most connections held at once. At the cap the oldest connection not in a request (still sending its head, or idle) is closed for the new one; when all are busy with requests, new ones get 503 `Retry-After: 1`. Keep it well below the file-descriptor limit (`ulimit -n`; the systemd unit in `infra/` sets `LimitNOFILE=65536`).",
    },
    Variable {
        names: &["HEADER_READ_TIMEOUT_SECONDS"],
        default: "`10`",
        meaning: "`serve` only (`--header-read-timeout-seconds`): a request head must arrive within this, and a kept-alive connection idle this long is closed",
    },
    Variable {
        names: &["RUST_LOG"],
        default: "`info`",
        meaning: "log filter",
    },
];

/// The table, in Markdown (what docs/forwarder.md shows under "Configuration (environment)").
pub fn reference() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in VARIABLES {
        let joiner = match v.names {
            ["QLIK_WEBHOOK_SECRET_PREVIOUS", ..] => " or ",
            _ => ", ",
        };
        let names: Vec<String> = v.names.iter().map(|n| format!("`{n}`")).collect();
        out += &format!(
            "| {} | {} | {} |\n",
            names.join(joiner),
            v.default,
            v.meaning
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn registered() -> BTreeSet<&'static str> {
        VARIABLES
            .iter()
            .flat_map(|v| v.names.iter().copied())
            .collect()
    }

    /// docs/forwarder.md's table is this one (regenerate with `qlik-webhook config-reference`).
    #[test]
    fn the_readme_table_is_generated() {
        let readme = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/forwarder.md"
        ))
        .unwrap();
        assert!(
            readme.contains(&reference()),
            "docs/forwarder.md's table is out of date: replace it with `cargo run -q -p qlik-webhook -- config-reference`"
        );
    }

    /// Every variable the configuration reads is described, and every one described is read
    /// (by the configuration, or by `serve`'s arguments, or by the logging).
    #[test]
    fn every_variable_read_is_described_and_every_one_described_is_read() {
        let asked = std::sync::Mutex::new(BTreeSet::new());
        // Settings that make each branch ask its variables.
        let sets: [&[(&str, &str)]; 4] = [
            &[
                ("QLIK_WEBHOOK_SECRET", "a-webhook-secret-of-32-characters!!"),
                ("MQTT_URL", "mqtts://broker.example.com"),
                ("BUTLER_OUTPUT", "copy"),
            ],
            &[
                ("QLIK_WEBHOOK_SECRET_SSM_PARAMETER", "/s"),
                ("AWS_IOT_ENDPOINT", "abc-ats.iot.eu-west-1.amazonaws.com"),
            ],
            &[
                ("QLIK_WEBHOOK_SECRET_ID", "s"),
                ("AWS_IOT_ENDPOINT_URL", "https://localhost:1"),
            ],
            &[
                ("QLIK_WEBHOOK_SECRET", "a-webhook-secret-of-32-characters!!"),
                ("MQTT_URL_SSM_PARAMETER", "/u"),
            ],
        ];
        for set in sets {
            let _ = crate::config::Config::from_lookup(|name| {
                asked.lock().unwrap().insert(name.to_owned());
                set.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            });
        }
        let asked = asked.into_inner().unwrap();
        let described = registered();
        let undescribed: Vec<_> = asked
            .iter()
            .filter(|n| !described.contains(n.as_str()))
            .collect();
        assert!(
            undescribed.is_empty(),
            "read but not in VARIABLES: {undescribed:?}"
        );
        let elsewhere = [
            "QLIK_WEBHOOK_LISTEN",
            "LOG_FORMAT",
            "MAX_CONNECTIONS",
            "HEADER_READ_TIMEOUT_SECONDS",
            "RUST_LOG",
        ];
        let main =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs")).unwrap();
        for name in elsewhere {
            assert!(
                name == "RUST_LOG" || main.contains(&format!("env = \"{name}\"")),
                "{name} is not a serve argument"
            );
        }
        let unread: Vec<_> = described
            .iter()
            .filter(|n| !asked.contains(**n) && !elsewhere.contains(n))
            .collect();
        assert!(unread.is_empty(), "in VARIABLES but never read: {unread:?}");
    }
}
