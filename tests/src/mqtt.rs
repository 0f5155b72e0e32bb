//! An MQTT 5 subscriber that records what arrives, for asserting what the relay published.

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::Duration;
use tokio::sync::mpsc;

/// One message as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub user_properties: Vec<(String, String)>,
    pub qos: u8,
    pub retain: bool,
}

impl Received {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Received>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Connects to the broker on `port` and subscribes to `filter` at QoS 1; returns once the
    /// broker confirmed the subscription.
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        let id = crate::unique_id("test-sub");
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(20 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let user_properties = p
                            .properties
                            .map(|props| props.user_properties)
                            .unwrap_or_default();
                        let _ = tx.send(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            user_properties,
                            qos: p.qos as u8,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("no SUBACK within 10 s")
            .expect("subscriber task ended");
        Subscriber {
            rx,
            _client: client,
            task,
        }
    }

    /// The next message, waiting up to `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Received> {
        tokio::time::timeout(limit, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message; panics if none arrives within 10 s.
    pub async fn expect(&mut self) -> Received {
        self.next(Duration::from_secs(10))
            .await
            .expect("no message within 10 s")
    }

    /// Proves that nothing else is on its way: publishes a marker on `topic` (under this
    /// subscription) to the broker on `port` and returns every message that arrived before it.
    ///
    /// Anything published before the marker reaches the broker first and is queued to this
    /// subscriber ahead of it, so an empty result means nothing was published, not merely
    /// that nothing had arrived yet when the test looked.
    pub async fn before_marker(&mut self, port: u16, topic: &str) -> Vec<Received> {
        let marker = crate::unique_id("marker");
        publish(port, topic, marker.as_bytes(), None).await;
        let mut before = Vec::new();
        loop {
            let m = self.expect().await;
            if m.topic == topic && m.payload == marker.as_bytes() {
                return before;
            }
            before.push(m);
        }
    }

    /// Messages already received and not yet taken.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = vec![];
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }
}

/// Publishes like the forwarder does (QoS 1, optional `qlik-signature` user property) and waits
/// for the broker's PUBACK.
pub async fn publish(port: u16, topic: &str, payload: &[u8], signature: Option<&str>) {
    let properties: Vec<(&str, &str)> = signature
        .map(|s| ("qlik-signature", s))
        .into_iter()
        .collect();
    publish_with(port, topic, payload, &properties).await
}

/// Publishes with QoS 1 and these MQTT 5 user properties, and waits for the broker's PUBACK.
pub async fn publish_with(port: u16, topic: &str, payload: &[u8], properties: &[(&str, &str)]) {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let id = crate::unique_id("test-pub");
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let props = PublishProperties {
        user_properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    client
        .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.to_vec(), props)
        .await
        .expect("queue publish");
    let acked = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("publish to port {port} failed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("no PUBACK within 10 s");
    let _ = client.disconnect().await;
}
