//! The durable MQTT subscription (rumqttc; MQTT 5 by default, 3.1.1 on request).
//!
//! Promises:
//! - a persistent session (clean start off, a stable client id, a session expiry), so events
//!   published while the listener is down are delivered when it returns;
//! - QoS 1 with manual acknowledgement: a message is acknowledged only when the caller calls
//!   [`Message::ack`], i.e. after it was recorded;
//! - reconnects forever with capped exponential back-off and jitter, subscribing again when the
//!   broker lost the session; each state change is logged once, not a flood, and an outage
//!   that goes on is logged again every five minutes (with what to check: credentials, TLS, a
//!   TLS port spoken to without TLS), so a broker that is never reached is never silent;
//! - the MQTT event loop never waits for the consumer: received messages go on an unbounded
//!   queue, which the broker's flow control bounds (it sends at most [`RECEIVE_MAXIMUM`]
//!   unacknowledged messages with MQTT 5, `max_inflight_messages` with 3.1.1), so the loop keeps
//!   polling and acknowledgements always get out. (A bounded queue deadlocked under a burst:
//!   the loop waited for room in the queue while the consumer waited to send its acks.)

use crate::config::{BrokerConfig, Protocol};
use bytes::Bytes;
use qlik_events::tls::{self, SettingNames, TlsFiles};
use relay_mqtt::session::{Ack, Polled, Session};
use relay_mqtt::Failure;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most unacknowledged messages the broker may send us at once (MQTT 5 receive maximum).
pub const RECEIVE_MAXIMUM: u16 = 256;
/// Largest event we record: the pipeline's limit, equal to the forwarder's ceiling for
/// `MAX_BODY_BYTES`, so that whatever the forwarder answered 200 for is recorded here.
pub const MAX_MESSAGE_BYTES: u32 = qlik_events::MAX_EVENT_BYTES as u32;
/// Largest packet the client reads: MQTT's own maximum. A message over [`MAX_MESSAGE_BYTES`] is
/// read and recorded as rejected, so it is acknowledged once instead of making the client drop
/// the connection each time the broker redelivers it (a reconnect loop with MQTT 3.1.1) or the
/// broker drop it unseen (MQTT 5 with a smaller announced maximum). The broker's own message
/// size limit is what bounds memory here.
const MAX_PACKET_BYTES: u32 = 268_435_455;

/// One received message, to be acknowledged once handled.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// The `qlik-signature` user property (MQTT 5).
    pub signature: Option<String>,
    /// The forwarder's `qlik-relay-rewritten` mark (MQTT 5): set on a copy rewritten for
    /// Butler, which is not the event Qlik signed.
    pub rewritten: Option<String>,
    ack: Ack,
}

/// Messages from the subscription, in arrival order.
pub type Messages = mpsc::UnboundedReceiver<Message>;

impl Message {
    /// Acknowledges the message to the broker (PUBACK).
    pub async fn ack(self) -> Result<(), String> {
        self.ack.send().await
    }
}

/// A session with the broker of `broker` as `client_id`: the listener's own (`persistent`:
/// kept while it is away, so messages wait for it), or a passing one that leaves nothing
/// behind (`check-config --online`). With a `status_topic`, the broker publishes `offline`
/// there if the connection dies.
pub fn session(
    broker: &BrokerConfig,
    client_id: &str,
    persistent: bool,
    status_topic: Option<&str>,
) -> anyhow::Result<Session> {
    let transport = match tls_config(broker)? {
        Some(tls) => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)),
        None => rumqttc::Transport::tcp(),
    };
    let credentials = broker.username.clone().map(|u| {
        let password = broker
            .password
            .as_ref()
            .map(|p| String::from_utf8_lossy(p.expose()).into_owned())
            .unwrap_or_default();
        (u, password)
    });
    let keep_alive = Duration::from_secs(u64::from(broker.keep_alive_secs));
    let offline = status_payload(client_id, "offline");
    Ok(match broker.protocol {
        Protocol::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(client_id, &broker.host, broker.port);
            opts.set_keep_alive(keep_alive)
                .set_clean_start(!persistent)
                .set_session_expiry_interval(Some(if persistent {
                    broker.session_expiry_secs
                } else {
                    0
                }))
                .set_manual_acks(true)
                .set_receive_maximum(Some(RECEIVE_MAXIMUM))
                // Only the status messages go out on this connection. Without a limit rumqttc
                // allocates an in-flight table for 65,535 publishes (~13 MB resident).
                .set_outgoing_inflight_upper_limit(16)
                .set_max_packet_size(Some(MAX_PACKET_BYTES))
                .set_transport(transport);
            if let Some((u, p)) = credentials {
                opts.set_credentials(u, p);
            }
            if let Some(topic) = status_topic {
                opts.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    topic,
                    offline.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            // PUBACKs and status messages go out at once instead of waiting on Nagle.
            let mut network = rumqttc::NetworkOptions::new();
            network.set_tcp_nodelay(true);
            opts.set_network_options(network);
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, 256);
            Session::V5(client, Box::new(eventloop))
        }
        Protocol::V311 => {
            let mut opts = rumqttc::MqttOptions::new(client_id, &broker.host, broker.port);
            let max = MAX_PACKET_BYTES as usize;
            opts.set_keep_alive(keep_alive)
                .set_clean_session(!persistent)
                .set_manual_acks(true)
                .set_max_packet_size(max, 64 * 1024)
                .set_transport(transport);
            if let Some((u, p)) = credentials {
                opts.set_credentials(u, p);
            }
            if let Some(topic) = status_topic {
                opts.set_last_will(rumqttc::LastWill::new(
                    topic,
                    offline,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 256);
            eventloop.network_options.set_tcp_nodelay(true);
            Session::V311(client, Box::new(eventloop))
        }
    })
}

/// Whether the broker connection is up, for health checks.
#[derive(Clone, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Connects and subscribes to `filter`; messages arrive on the returned channel. With a
/// `status_topic`, an `online` status is published there (retained) on every connect, and the
/// broker publishes the last will `offline` (retained) if the connection dies.
pub fn subscribe(
    broker: &BrokerConfig,
    filter: &str,
    status_topic: Option<&str>,
) -> anyhow::Result<(Messages, Connected)> {
    if broker.tls.insecure_skip_verify {
        tracing::warn!(
            "{} is true: the broker's certificate is NOT verified",
            broker.key("tls.insecureSkipVerify")
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let connected = Connected::default();
    let state = LoopState {
        tx,
        connected: connected.clone(),
        filter: filter.to_owned(),
        broker: format!("{}:{}", broker.host, broker.port),
        status_topic: status_topic.map(str::to_owned),
        client_id: broker.client_id.clone(),
        setting: relay_mqtt::Setting::Yaml(broker.key_path.clone()),
        port: broker.port,
        tls: broker.tls.enable,
        outage: std::sync::Mutex::new(None),
    };
    let session = session(broker, &broker.client_id, true, status_topic)?;
    tokio::spawn(drive(session, state));
    Ok((rx, connected))
}

/// The TLS settings for the broker, or `None` for plain TCP.
pub fn tls_config(broker: &BrokerConfig) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if !broker.tls.enable {
        return Ok(None);
    }
    let files = TlsFiles {
        ca_file: broker.tls.ca_file.as_deref(),
        client: broker
            .tls
            .cert_file
            .as_deref()
            .zip(broker.tls.key_file.as_deref()),
        insecure_skip_verify: broker.tls.insecure_skip_verify,
    };
    let keys = &broker.tls.keys;
    let names = SettingNames {
        ca_file: &keys.ca_file,
        cert_file: &keys.cert_file,
        key_file: &keys.key_file,
    };
    Ok(Some(Arc::new(tls::client_config(files, names)?)))
}

/// A publisher on the same broker, on its own connection (client id `<clientId>-<role>-…`).
pub fn publisher(broker: &BrokerConfig, role: &str) -> anyhow::Result<relay_mqtt::MqttPublisher> {
    let scheme = if broker.tls.enable { "mqtts" } else { "mqtt" };
    Ok(relay_mqtt::MqttPublisher::new(relay_mqtt::BrokerOptions {
        host: broker.host.clone(),
        port: broker.port,
        username: broker.username.clone(),
        password: broker.password.clone(),
        tls: tls_config(broker)?,
        protocol: broker.protocol,
        client_id_prefix: format!("{}-{role}", broker.client_id),
        max_payload: MAX_MESSAGE_BYTES as usize,
        timeout: Duration::from_secs(10),
        description: format!("{scheme}://{}:{}", broker.host, broker.port),
        setting: relay_mqtt::Setting::Yaml(broker.key_path.clone()),
    }))
}

/// The status document: `{"status": "online"|"offline", "clientId": …, "version": …}`.
pub fn status_payload(client_id: &str, status: &str) -> String {
    serde_json::json!({
        "status": status,
        "clientId": client_id,
        "service": "qlik-listener",
        "version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

struct LoopState {
    tx: mpsc::UnboundedSender<Message>,
    connected: Connected,
    filter: String,
    broker: String,
    status_topic: Option<String>,
    client_id: String,
    /// For hints: the key path of this broker's settings, its port, and whether TLS is on.
    setting: relay_mqtt::Setting,
    port: u16,
    tls: bool,
    /// While the broker cannot be reached: since when, and when that was last said.
    outage: std::sync::Mutex<Option<(Instant, Instant)>>,
}

/// How often an ongoing outage is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(300);

impl LoopState {
    /// Logs the transition to connected once; says whether to subscribe.
    fn on_connack(&self, session_present: bool) -> bool {
        let outage = self.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !self.connected.0.swap(true, Ordering::SeqCst) {
            match outage {
                Some((since, _)) => {
                    tracing::info!(broker = %self.broker, session_present, down_seconds = since.elapsed().as_secs(), "connected to the broker")
                }
                None => {
                    tracing::info!(broker = %self.broker, session_present, "connected to the broker")
                }
            }
        }
        !session_present
    }

    /// Logs the transition to disconnected, and then the ongoing outage every few minutes;
    /// returns how long to wait before retrying.
    fn on_error(&self, error: String, failure: Failure, failures: &mut u32) -> Duration {
        let accepted = self.connected.0.swap(false, Ordering::SeqCst);
        let hint = failure
            .hint(&self.setting, self.port, self.tls, accepted)
            .unwrap_or_else(|| "-".to_owned());
        let now = Instant::now();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match outage.as_mut() {
            None => {
                *outage = Some((now, now));
                tracing::warn!(broker = %self.broker, error = %error, hint = %hint, "broker connection lost; reconnecting");
            }
            Some((since, said)) if now.duration_since(*said) >= OUTAGE_REMINDER => {
                *said = now;
                let minutes = now.duration_since(*since).as_secs() / 60;
                tracing::warn!(broker = %self.broker, error = %error, hint = %hint, down_minutes = minutes, "broker still unreachable; events wait at the broker (or Qlik resends them) until it is back");
            }
            Some(_) => tracing::debug!(broker = %self.broker, error = %error, "reconnect failed"),
        }
        *failures += 1;
        backoff(*failures)
    }
}

/// Capped exponential back-off (0.5 s … 30 s) with ±25 % jitter.
fn backoff(failures: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << failures.min(6)).min(30_000);
    let jitter = fastrand::u64(0..=base / 2) as i64 - (base / 4) as i64;
    Duration::from_millis((base as i64 + jitter).max(100) as u64)
}

/// The session's loop, the same for both protocols: (re)subscribe and say "online" on each
/// connect, hand each message on, back off after an error.
async fn drive(mut session: Session, state: LoopState) {
    let client = session.client();
    let mut failures = 0;
    loop {
        match session.poll().await {
            Polled::Connected { session_present } => {
                failures = 0;
                if state.on_connack(session_present) {
                    if let Err(e) = client.subscribe(&state.filter).await {
                        tracing::error!(error = %e, "cannot subscribe");
                    }
                }
                if let Some(topic) = &state.status_topic {
                    let online = status_payload(&state.client_id, "online");
                    if let Err(e) = client.publish_retained(topic, online).await {
                        tracing::warn!(error = %e, "cannot publish the online status");
                    }
                }
            }
            Polled::Subscribed(codes) => {
                tracing::info!(filter = %state.filter, codes = %codes, "subscribed");
            }
            Polled::Message(received) => {
                let received = *received;
                let message = Message {
                    signature: received.property("qlik-signature"),
                    rewritten: received.property(relay_mqtt::REWRITTEN_PROPERTY),
                    topic: received.topic,
                    payload: received.payload,
                    ack: received.ack,
                };
                if state.tx.send(message).is_err() {
                    return; // the listener is shutting down
                }
            }
            Polled::Other => {}
            Polled::Failed(error, failure) => {
                let wait = state.on_error(error, failure, &mut failures);
                tokio::time::sleep(wait).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = backoff(failures).as_millis() as u64;
            let base = (500u64 << failures.min(6)).min(30_000);
            assert!(
                d >= base * 3 / 4 && d <= base * 5 / 4 + 1,
                "{failures}: {d} vs {base}"
            );
        }
        assert!(backoff(30) <= Duration::from_millis(37_501));
    }
}
