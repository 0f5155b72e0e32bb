//! Publishing to any MQTT broker (Mosquitto, EMQX, HiveMQ, IoT Core over MQTT) with rumqttc.
//!
//! Why this is more than `client.publish`: rumqttc's `publish` only queues a message. Callers
//! must know that the broker took *this* message (the forwarder answers a webhook 2xx only
//! then), so each publish is tracked from the queue to its packet id to its PUBACK
//! ([`AckTracker`]).
//!
//! Promises:
//! - one connection is shared by all callers and kept (e.g. across warm Lambda invocations);
//! - a connection that dropped (e.g. while a Lambda was frozen) is replaced on the next publish,
//!   and a publish that was lost with a previously healthy connection is retried once on a new
//!   one (at-least-once: receivers de-duplicate by event id);
//! - a publish never waits longer than the configured timeout;
//! - MQTT 5 by default, with the signature as the `qlik-signature` user property; 3.1.1 on request.

use crate::{Message, Protocol, Publish, PublishError, PublishFuture};
use qlik_events::Secret;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

type AckResult = Result<(), PublishError>;

/// Matches publish requests to PUBACKs, in the order rumqttc handles them.
///
/// rumqttc takes requests from its channel in order and reports `Outgoing::Publish(pkid)` as it
/// sends each one (or `AwaitAck(pkid)` when the packet id is still in use and it must wait), so
/// the n-th reported publish is the n-th queued one.
#[derive(Default)]
pub struct AckTracker {
    queued: VecDeque<oneshot::Sender<AckResult>>,
    /// A publish held back by rumqttc because its packet id was still in flight.
    held: Option<(u16, oneshot::Sender<AckResult>)>,
    in_flight: HashMap<u16, oneshot::Sender<AckResult>>,
    /// Set when the connection failed: nothing more can be tracked on it.
    closed: Option<PublishError>,
}

impl AckTracker {
    /// Whether publishes can still be tracked; the error says why not.
    pub fn check_open(&self) -> Result<(), PublishError> {
        match &self.closed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// A publish was handed to the client; `tx` learns its fate.
    pub fn queued(&mut self, tx: oneshot::Sender<AckResult>) {
        match &self.closed {
            Some(error) => {
                let _ = tx.send(Err(error.clone()));
            }
            None => self.queued.push_back(tx),
        }
    }

    /// rumqttc wrote the next publish with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        let tx = match self.held.take() {
            Some((held, tx)) if held == pkid => Some(tx),
            other => {
                self.held = other;
                self.queued.pop_front()
            }
        };
        if let Some(tx) = tx {
            if let Some(stale) = self.in_flight.insert(pkid, tx) {
                let _ = stale.send(Err(PublishError::Unavailable(
                    "packet id reused before acknowledgement".into(),
                )));
            }
        }
    }

    /// rumqttc holds the next publish back until `pkid` is acknowledged.
    pub fn held_back(&mut self, pkid: u16) {
        if let Some(tx) = self.queued.pop_front() {
            self.held = Some((pkid, tx));
        }
    }

    /// The broker answered the publish with packet id `pkid`.
    pub fn acked(&mut self, pkid: u16, result: AckResult) {
        if let Some(tx) = self.in_flight.remove(&pkid) {
            // The requester may have timed out and gone: nothing to tell then.
            let _ = tx.send(result);
        }
    }

    /// The connection is gone: every publish not yet acknowledged fails, and so does any
    /// publish queued from now on.
    pub fn fail_all(&mut self, error: &PublishError) {
        self.closed = Some(error.clone());
        let held = self.held.take().map(|(_, tx)| tx);
        let in_flight = self.in_flight.drain().map(|(_, tx)| tx);
        for tx in self.queued.drain(..).chain(held).chain(in_flight) {
            let _ = tx.send(Err(error.clone()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.held.is_none() && self.in_flight.is_empty()
    }
}

/// What the connection task reports, whichever protocol version it speaks.
enum LoopEvent {
    Connected,
    Sent(u16),
    HeldBack(u16),
    Acked(u16, AckResult),
    Other,
}

/// State shared by the publishing side and the task that drives the connection.
struct Shared {
    tracker: Mutex<AckTracker>,
    /// The broker accepted the connection (CONNACK) at some point.
    connected: AtomicBool,
    /// The connection failed; a new one is needed.
    dead: AtomicBool,
    /// Woken when the connection is accepted or fails.
    changed: tokio::sync::Notify,
    /// The largest packet we may send (payload limit plus overhead), to compare with the
    /// broker's maximum.
    max_packet_bytes: usize,
    /// For hints: the setting holding the broker's details, its port, and whether TLS is used.
    setting: Setting,
    port: u16,
    tls: bool,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, AckTracker> {
        // A panic while holding this lock cannot leave the tracker inconsistent in a way that
        // matters more than losing the process, so recover the guard.
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn on_event(&self, event: LoopEvent) {
        match event {
            LoopEvent::Connected => {
                if !self.connected.swap(true, Ordering::SeqCst) {
                    tracing::debug!("connected to the broker");
                    self.changed.notify_waiters();
                }
            }
            LoopEvent::Sent(pkid) => self.tracker().sent(pkid),
            LoopEvent::HeldBack(pkid) => self.tracker().held_back(pkid),
            LoopEvent::Acked(pkid, result) => self.tracker().acked(pkid, result),
            LoopEvent::Other => {}
        }
    }

    fn on_lost(&self, reason: String, failure: Failure) {
        self.dead.store(true, Ordering::SeqCst);
        let accepted = self.connected.load(Ordering::SeqCst);
        let was = if accepted { "lost" } else { "failed" };
        match failure.hint(&self.setting, self.port, self.tls, accepted) {
            Some(hint) => tracing::warn!(reason = %reason, hint = %hint, "broker connection {was}"),
            None => tracing::warn!(reason = %reason, "broker connection {was}"),
        }
        self.tracker().fail_all(&PublishError::Unavailable(reason));
        self.changed.notify_waiters();
    }
}

enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

struct Connection {
    client: Client,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    fn is_usable(&self) -> bool {
        !self.shared.dead.load(Ordering::SeqCst)
    }

    /// Queues the message and returns where its acknowledgement will arrive.
    fn enqueue(&self, msg: &Message<'_>) -> Result<oneshot::Receiver<AckResult>, PublishError> {
        let (tx, rx) = oneshot::channel();
        // Hold the tracker while queueing so that queue order is tracker order, and so that a
        // connection failing at this moment either fails this publish or refuses it here.
        let mut tracker = self.shared.tracker();
        tracker.check_open()?;
        let queued = match &self.client {
            Client::V5(client) => {
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    user_properties: msg
                        .user_properties()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    ..Default::default()
                };
                client.try_publish_with_properties(
                    msg.topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    bytes::Bytes::copy_from_slice(msg.payload),
                    props,
                )
            }
            .map_err(|e| e.to_string()),
            Client::V311(client) => client
                .try_publish(
                    msg.topic,
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    msg.payload.to_vec(),
                )
                .map_err(|e| e.to_string()),
        };
        match queued {
            Ok(()) => {
                tracker.queued(tx);
                Ok(rx)
            }
            Err(e) => Err(PublishError::Unavailable(format!(
                "could not queue the message: {e}"
            ))),
        }
    }
}

/// Where and how to publish.
#[derive(Clone)]
pub struct BrokerOptions {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS settings (with verification); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub protocol: Protocol,
    /// A random suffix is added, so concurrent instances keep apart.
    pub client_id_prefix: String,
    /// The largest payload that will be published.
    pub max_payload: usize,
    /// How long a publish (connection included) may take.
    pub timeout: Duration,
    /// How to show the broker in logs, without secrets (e.g. `mqtts://user:***@host:8883`).
    pub description: String,
    /// The setting that holds these details (e.g. `MQTT_URL`), named in hints when the broker
    /// refuses the credentials or the connection.
    pub setting: Setting,
}

/// Where a broker's details are set, so that a hint names it in that place's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A URL (`MQTT_URL`): TLS is its scheme, `mqtts://`.
    Url(String),
    /// A YAML section, by key path: TLS is its `tls.enable`.
    Yaml(String),
}

impl Setting {
    pub fn name(&self) -> &str {
        match self {
            Setting::Url(name) | Setting::Yaml(name) => name,
        }
    }

    fn tls_on(&self) -> &'static str {
        match self {
            Setting::Url(_) => "write mqtts:// (not mqtt://)",
            Setting::Yaml(_) => "set tls.enable: true",
        }
    }

    fn tls_off(&self) -> &'static str {
        match self {
            Setting::Url(_) => "write mqtt:// (not mqtts://)",
            Setting::Yaml(_) => "set tls.enable: false",
        }
    }
}

/// Why a broker connection failed, as far as the error tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker refused the user name, password or client certificate.
    Credentials,
    /// The TLS handshake failed on the certificate (or the broker's TLS settings).
    Tls,
    /// The TLS handshake got no TLS answer: the broker hung up or answered in plain MQTT (a
    /// plain port spoken to with TLS).
    NotTls,
    /// The connection was reset, aborted or garbled (a hint only before the broker accepted
    /// it: then it is usually a TLS port spoken to without TLS).
    ClosedEarly,
    Other,
}

impl Failure {
    pub fn of_v5(e: &rumqttc::v5::ConnectionError) -> Failure {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
        use rumqttc::v5::ConnectionError as E;
        match e {
            E::ConnectionRefused(
                Code::NotAuthorized | Code::BadUserNamePassword | Code::BadAuthenticationMethod,
            ) => Failure::Credentials,
            E::Tls(e) => Failure::of_tls(&e.to_string()),
            // Reset, aborted or garbled before CONNACK: what a TLS port does to plain MQTT.
            E::MqttState(_) | E::Io(_) => Failure::ClosedEarly,
            _ => Failure::Other,
        }
    }

    pub fn of_v311(e: &rumqttc::ConnectionError) -> Failure {
        use rumqttc::ConnectReturnCode as Code;
        use rumqttc::ConnectionError as E;
        match e {
            E::ConnectionRefused(Code::NotAuthorized | Code::BadUserNamePassword) => {
                Failure::Credentials
            }
            E::Tls(e) => Failure::of_tls(&e.to_string()),
            E::MqttState(rumqttc::StateError::ConnectionAborted) | E::Io(_) => Failure::ClosedEarly,
            _ => Failure::Other,
        }
    }

    /// A TLS error: about the certificate, or no TLS answer at all (the connection closed or
    /// answered with something that is not TLS).
    fn of_tls(error: &str) -> Failure {
        let e = error.to_ascii_lowercase();
        let not_tls = [
            "eof",
            "corrupt message",
            "invalidcontenttype",
            "reset",
            "aborted",
        ];
        if not_tls.iter().any(|n| e.contains(n)) && !e.contains("certificate") {
            Failure::NotTls
        } else {
            Failure::Tls
        }
    }

    /// What to check, in the terms of `setting`; `port`: the broker's port; `tls`: whether TLS
    /// was used; `accepted`: whether the broker had accepted the connection before it failed.
    pub fn hint(self, setting: &Setting, port: u16, tls: bool, accepted: bool) -> Option<String> {
        let name = setting.name();
        match self {
            Failure::Credentials => Some(format!(
                "the broker refused the credentials: check the user name and password (or client certificate) in {name}"
            )),
            Failure::Tls => Some(format!(
                "TLS failed: check the broker's certificate, the CA and the host name in {name}"
            )),
            Failure::NotTls if !accepted => Some(format!(
                "port {port} does not answer in TLS: is it the broker's plain MQTT port (usually 1883)? Use its TLS port (usually 8883), or {} in {name}",
                setting.tls_off()
            )),
            Failure::ClosedEarly if !accepted && !tls => Some(format!(
                "the broker closed the connection before accepting it: if this port speaks TLS (usually 8883), {} in {name}",
                setting.tls_on()
            )),
            _ => None,
        }
    }
}

/// The rumqttc options for one broker, ready to open connections with.
struct Endpoint {
    options: BrokerOptions,
    max_packet_bytes: usize,
}

/// Publishes to an MQTT broker and waits for each PUBACK.
pub struct MqttPublisher {
    endpoint: Endpoint,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl MqttPublisher {
    /// Prepares the publisher; the connection opens on the first publish (or [`Self::connect`]).
    pub fn new(options: BrokerOptions) -> Self {
        MqttPublisher {
            endpoint: Endpoint {
                // Topic, properties and header fit comfortably in 64 KiB more.
                max_packet_bytes: options.max_payload + 64 * 1024,
                options,
            },
            connection: Mutex::new(None),
        }
    }

    /// Opens the connection now, so the first webhook does not pay for it, and waits up to the
    /// timeout for the broker to accept it.
    pub async fn connect(&self) -> Result<(), PublishError> {
        let conn = self.connection().0;
        let deadline = tokio::time::Instant::now() + self.endpoint.options.timeout;
        loop {
            // Register for the wake-up before looking, so no change slips between the two.
            let changed = conn.shared.changed.notified();
            if conn.shared.connected.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !conn.is_usable() {
                conn.shared.tracker().check_open()?;
                return Err(PublishError::Unavailable("connection failed".into()));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(PublishError::Timeout(self.endpoint.options.timeout));
            }
        }
    }

    /// The current connection, or a new one if there is none or it failed. The flag says
    /// whether the connection had already been accepted by the broker before this call.
    fn connection(&self) -> (Arc<Connection>, bool) {
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = slot.as_ref().filter(|c| c.is_usable()) {
            return (conn.clone(), conn.shared.connected.load(Ordering::SeqCst));
        }
        let conn = Arc::new(self.endpoint.open());
        *slot = Some(conn.clone());
        (conn, false)
    }

    fn discard(&self, conn: &Arc<Connection>) {
        conn.shared.dead.store(true, Ordering::SeqCst);
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    async fn publish_acked(&self, msg: Message<'_>) -> Result<(), PublishError> {
        let timeout = self.endpoint.options.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut retried = false;
        loop {
            let (conn, was_connected) = self.connection();
            let outcome = match conn.enqueue(&msg) {
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(PublishError::Unavailable("connection closed".into())),
                    Err(_) => {
                        // A silent broker (half-open connection): start afresh next time.
                        self.discard(&conn);
                        return Err(PublishError::Timeout(timeout));
                    }
                },
                Err(e) => Err(e),
            };
            tracing::debug!(was_connected, retried, outcome = ?outcome, "publish attempt");
            match outcome {
                Err(PublishError::Unavailable(reason)) if was_connected && !retried => {
                    // The connection was healthy once and dropped since (a frozen Lambda, a
                    // broker restart): try once more on a new connection.
                    tracing::info!(reason = %reason, "reconnecting to the broker");
                    self.discard(&conn);
                    retried = true;
                }
                other => return other,
            }
        }
    }
}

impl Publish for MqttPublisher {
    fn publish<'a>(&'a self, message: Message<'a>) -> PublishFuture<'a> {
        Box::pin(self.publish_acked(message))
    }

    fn describe(&self) -> String {
        let o = &self.endpoint.options;
        format!("{} ({})", o.description, o.protocol.label())
    }
}

impl Endpoint {
    fn client_id(&self) -> String {
        // A random suffix keeps concurrent instances (e.g. Lambda) from taking over each
        // other's session.
        format!(
            "{}-{:08x}",
            self.options.client_id_prefix,
            fastrand::u32(..)
        )
    }

    fn transport(&self) -> rumqttc::Transport {
        match &self.options.tls {
            Some(tls) => {
                rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone()))
            }
            None => rumqttc::Transport::tcp(),
        }
    }

    fn connect_timeout_secs(&self) -> u64 {
        self.options.timeout.as_secs().max(1)
    }

    fn open(&self) -> Connection {
        let shared = Arc::new(Shared {
            tracker: Mutex::new(AckTracker::default()),
            connected: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            max_packet_bytes: self.max_packet_bytes,
            setting: self.options.setting.clone(),
            port: self.options.port,
            tls: self.options.tls.is_some(),
        });
        let id = self.client_id();
        let (host, port) = (self.options.host.clone(), self.options.port);
        let credentials = self.options.username.clone().map(|u| {
            let password = self
                .options
                .password
                .as_ref()
                .map(|p| String::from_utf8_lossy(p.expose()).into_owned())
                .unwrap_or_default();
            (u, password)
        });
        const CHANNEL: usize = 1024;
        // Publishes awaiting their PUBACK at once. rumqttc's MQTT 5 client otherwise sizes its
        // in-flight table for 65,535 (about 13 MB, allocated up front, resident for the
        // process's life); the broker's receive maximum lowers it further (Mosquitto: 20).
        const MAX_INFLIGHT: u16 = 1024;
        let (client, task) = match self.options.protocol {
            Protocol::V5 => {
                let mut opts = rumqttc::v5::MqttOptions::new(id, host, port);
                opts.set_keep_alive(Duration::from_secs(30))
                    .set_clean_start(true)
                    .set_transport(self.transport())
                    .set_max_packet_size(Some(64 * 1024))
                    .set_outgoing_inflight_upper_limit(MAX_INFLIGHT);
                if let Some((u, p)) = credentials {
                    opts.set_credentials(u, p);
                }
                let mut network = rumqttc::NetworkOptions::new();
                network.set_connection_timeout(self.connect_timeout_secs());
                network.set_tcp_nodelay(true);
                opts.set_network_options(network);
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, CHANNEL);
                let task = tokio::spawn(drive_v5(eventloop, shared.clone()));
                (Client::V5(client), task)
            }
            Protocol::V311 => {
                let mut opts = rumqttc::MqttOptions::new(id, host, port);
                opts.set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(true)
                    .set_transport(self.transport())
                    .set_max_packet_size(64 * 1024, self.max_packet_bytes);
                if let Some((u, p)) = credentials {
                    opts.set_credentials(u, p);
                }
                let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, CHANNEL);
                eventloop
                    .network_options
                    .set_connection_timeout(self.connect_timeout_secs());
                eventloop.network_options.set_tcp_nodelay(true);
                let task = tokio::spawn(drive_v311(eventloop, shared.clone()));
                (Client::V311(client), task)
            }
        };
        Connection {
            client,
            shared,
            task,
        }
    }
}

async fn drive_v5(mut eventloop: rumqttc::v5::EventLoop, shared: Arc<Shared>) {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size);
                if let Some(max) = broker_max.filter(|&m| (m as usize) < shared.max_packet_bytes) {
                    tracing::warn!(
                        broker_max_packet_bytes = max,
                        our_max_packet_bytes = shared.max_packet_bytes,
                        "the broker takes smaller messages than the configured body limit allows: larger events will be refused (503); lower MAX_BODY_BYTES or raise the broker's message_size_limit"
                    );
                }
                LoopEvent::Connected
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LoopEvent::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => LoopEvent::HeldBack(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let result = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                    reason => Err(PublishError::Refused(format!("PUBACK reason {reason:?}"))),
                };
                LoopEvent::Acked(ack.pkid, result)
            }
            Ok(_) => LoopEvent::Other,
            Err(e) => return shared.on_lost(e.to_string(), Failure::of_v5(&e)),
        };
        shared.on_event(event);
    }
}

async fn drive_v311(mut eventloop: rumqttc::EventLoop, shared: Arc<Shared>) {
    use rumqttc::{Event, Outgoing, Packet};
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LoopEvent::Connected,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LoopEvent::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => LoopEvent::HeldBack(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => LoopEvent::Acked(ack.pkid, Ok(())),
            Ok(_) => LoopEvent::Other,
            Err(e) => return shared.on_lost(e.to_string(), Failure::of_v311(&e)),
        };
        shared.on_event(event);
    }
}

#[cfg(test)]
mod tests;
