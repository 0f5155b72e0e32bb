//! The MQTT publisher set up from the forwarder's environment (`MQTT_URL` and friends).

use crate::config::{MqttConfig, MqttUrl};
use qlik_events::tls::{self, SettingNames, TlsFiles};
use relay_mqtt::{BrokerOptions, MqttPublisher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TLS_SETTINGS: SettingNames<'static> = SettingNames {
    ca_file: "MQTT_CA_FILE",
    cert_file: "MQTT_CLIENT_CERT_FILE",
    key_file: "MQTT_CLIENT_KEY_FILE",
};

/// A publisher for the broker at `url`; `max_payload` sizes the largest packet we may send.
pub fn publisher(
    config: &MqttConfig,
    url: MqttUrl,
    max_payload: usize,
    timeout: Duration,
) -> anyhow::Result<MqttPublisher> {
    let tls = if url.tls {
        let files = TlsFiles {
            ca_file: config.ca_file.as_deref().map(Path::new),
            client: config
                .client_cert_file
                .as_deref()
                .zip(config.client_key_file.as_deref())
                .map(|(c, k)| (Path::new(c), Path::new(k))),
            insecure_skip_verify: false,
        };
        Some(Arc::new(tls::client_config(files, TLS_SETTINGS)?))
    } else {
        None
    };
    Ok(MqttPublisher::new(BrokerOptions {
        description: url.redacted(),
        host: url.host,
        port: url.port,
        username: url.username,
        password: url.password,
        tls,
        protocol: config.protocol,
        client_id_prefix: config.client_id_prefix.clone(),
        max_payload,
        timeout,
        setting: relay_mqtt::Setting::Url(match &config.url {
            crate::config::MqttUrlSource::Ssm(name) => {
                format!("MQTT_URL_SSM_PARAMETER ({name})")
            }
            _ => "MQTT_URL".to_owned(),
        }),
    }))
}
