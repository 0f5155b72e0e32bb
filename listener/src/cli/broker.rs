//! An embedded MQTT broker (rumqttd, behind the `embedded-broker` feature) so the relay can be
//! tried on one machine with nothing else installed: `qlik-listener broker`, used by
//! `scripts/demo`.
//!
//! What it promises: MQTT 5 on one address and, optionally, MQTT 3.1.1 on another; QoS 1 with
//! persistent sessions while it runs; with `show`, one line per message it routes (topic, size,
//! user properties), so a newcomer sees the hop between forwarder and listener.
//! What it does not: TLS, passwords, ACLs, or keeping anything across a restart. For real
//! deployments use Mosquitto (`infra/mosquitto/`) or AWS IoT Core (`infra/iot-core-listener.yaml`).

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where the broker listens and what it prints.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// MQTT 5 address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
    /// Also serve MQTT 3.1.1 on this address.
    #[arg(long)]
    pub listen_v311: Option<SocketAddr>,
    /// Print one line per message published on topics matching this filter.
    #[arg(long)]
    pub show: Option<String>,
    /// Largest message accepted, bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_payload: usize,
}

fn server(name: &str, listen: SocketAddr, max_payload: usize) -> HashMap<String, ServerSettings> {
    let settings = ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    HashMap::from([(name.to_owned(), settings)])
}

/// The rumqttd configuration for `options`.
pub fn config(options: &Options) -> Config {
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: options
            .listen_v311
            .map(|a| server("mqtt-3.1.1", a, options.max_payload)),
        v5: Some(server("mqtt-5", options.listen, options.max_payload)),
        ..Config::default()
    }
}

/// Runs the broker on the calling thread until the process ends. Fails at once if an address
/// cannot be bound (checked before rumqttd starts, so the error names the address); port 0
/// picks a free port, printed in the first line.
pub fn run(mut options: Options) -> anyhow::Result<()> {
    // rumqttd only logs a bind failure from its server thread: find out here instead.
    let bind = |address: SocketAddr| -> anyhow::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("cannot listen on {address}"))?;
        listener
            .local_addr()
            .with_context(|| format!("no local address for {address}"))
    };
    options.listen = bind(options.listen)?;
    options.listen_v311 = options.listen_v311.map(bind).transpose()?;
    let mut broker = Broker::new(config(&options));
    if let Some(filter) = options.show.clone() {
        let (mut link_tx, mut link_rx) = broker
            .link("qlik-listener-broker-monitor")
            .context("cannot attach the monitor to the embedded broker")?;
        link_tx
            .subscribe(filter.clone())
            .with_context(|| format!("cannot subscribe the monitor to {filter}"))?;
        std::thread::Builder::new()
            .name("broker-monitor".into())
            .spawn(move || {
                while let Ok(notification) = link_rx.recv() {
                    if let Some(Notification::Forward(forward)) = notification {
                        println!("{}", describe(&forward));
                    }
                }
            })
            .context("cannot start the monitor thread")?;
    }
    println!(
        "embedded MQTT broker on {} (MQTT 5){}",
        options.listen,
        options
            .listen_v311
            .map(|a| format!(" and {a} (MQTT 3.1.1)"))
            .unwrap_or_default()
    );
    broker.start().context("the embedded broker stopped")
}

/// One line for a routed message: topic, size and user properties (the forwarder's signature).
fn describe(forward: &rumqttd::Forward) -> String {
    let topic = String::from_utf8_lossy(&forward.publish.topic);
    let properties = forward
        .properties
        .as_ref()
        .map(|p| {
            p.user_properties
                .iter()
                .map(|(k, v)| format!(" [{k}={v}]"))
                .collect::<String>()
        })
        .unwrap_or_default();
    format!(
        "broker delivered {} bytes on {topic}{properties}",
        forward.publish.payload.len()
    )
}
