//! A subscriber's MQTT session, either protocol, seen as one stream of protocol-neutral events
//! (as [`crate::MqttPublisher`] does for publishing), so that a consumer writes one loop.
//!
//! Promise: every packet the consumer acts on (connect, subscribe result, message) and every
//! connection error comes out of [`Session::poll`] the same way for MQTT 5 and 3.1.1; a message
//! is acknowledged only when its [`Ack`] is used (manual acknowledgement).

use crate::Failure;
use bytes::Bytes;

/// The client side of a session: a client and its event loop.
pub enum Session {
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
    V311(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
}

/// The session's client, to act while the event loop is polled elsewhere (it can be shared
/// between threads; the event loop cannot).
#[derive(Clone)]
pub enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// What polling the session gave.
pub enum Polled {
    /// The broker accepted the connection; whether it still had our session.
    Connected {
        session_present: bool,
    },
    /// The result of a subscription, for the log.
    Subscribed(String),
    Message(Box<Received>),
    /// A connection error: the event loop reconnects at the next poll.
    Failed(String, Failure),
    /// Anything else (pings, acknowledgements).
    Other,
}

/// A received message.
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    /// MQTT 5 user properties (none with 3.1.1).
    pub properties: Vec<(String, String)>,
    pub ack: Ack,
}

impl Received {
    /// The user property `name`, if the message has it.
    pub fn property(&self, name: &str) -> Option<String> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Acknowledges one message to the broker (PUBACK), once it is handled.
pub enum Ack {
    V5(
        rumqttc::v5::AsyncClient,
        rumqttc::v5::mqttbytes::v5::Publish,
    ),
    V311(rumqttc::AsyncClient, rumqttc::Publish),
}

impl Ack {
    pub async fn send(self) -> Result<(), String> {
        match self {
            Ack::V5(client, publish) => client.ack(&publish).await.map_err(|e| e.to_string()),
            Ack::V311(client, publish) => client.ack(&publish).await.map_err(|e| e.to_string()),
        }
    }
}

impl Session {
    /// The next event of the session (drives the connection; call it in a loop).
    pub async fn poll(&mut self) -> Polled {
        match self {
            Session::V5(client, eventloop) => {
                use rumqttc::v5::mqttbytes::v5::Packet;
                use rumqttc::v5::Event;
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                        session_present: ack.session_present,
                    },
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        Polled::Subscribed(format!("{:?}", ack.return_codes))
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let properties = publish
                            .properties
                            .as_ref()
                            .map(|p| p.user_properties.clone())
                            .unwrap_or_default();
                        Polled::Message(Box::new(Received {
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            payload: publish.payload.clone(),
                            properties,
                            ack: Ack::V5(client.clone(), publish),
                        }))
                    }
                    Ok(_) => Polled::Other,
                    Err(e) => Polled::Failed(e.to_string(), Failure::of_v5(&e)),
                }
            }
            Session::V311(client, eventloop) => {
                use rumqttc::{Event, Packet};
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                        session_present: ack.session_present,
                    },
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        Polled::Subscribed(format!("{:?}", ack.return_codes))
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        Polled::Message(Box::new(Received {
                            topic: publish.topic.clone(),
                            payload: publish.payload.clone(),
                            properties: Vec::new(),
                            ack: Ack::V311(client.clone(), publish),
                        }))
                    }
                    Ok(_) => Polled::Other,
                    Err(e) => Polled::Failed(e.to_string(), Failure::of_v311(&e)),
                }
            }
        }
    }

    /// Its client.
    pub fn client(&self) -> Client {
        match self {
            Session::V5(client, _) => Client::V5(client.clone()),
            Session::V311(client, _) => Client::V311(client.clone()),
        }
    }
}

impl Client {
    /// Subscribes to `filter` with QoS 1.
    pub async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V5(client) => client
                .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V311(client) => client
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Publishes `payload` to `topic`, QoS 1 and retained (a status message).
    pub async fn publish_retained(&self, topic: &str, payload: String) -> Result<(), String> {
        match self {
            Client::V5(client) => client
                .publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    payload,
                )
                .await
                .map_err(|e| e.to_string()),
            Client::V311(client) => client
                .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
