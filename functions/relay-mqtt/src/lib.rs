//! Publishing to MQTT brokers with the broker's acknowledgement awaited, shared by the
//! forwarder (webhooks → broker), and the listener (alerts and Butler's publish API).
//!
//! [`Publish`] is the seam: [`MqttPublisher`] speaks MQTT to any broker; the forwarder adds an
//! AWS IoT Core data-plane publisher. [`session`] is the subscriber's side: either protocol as
//! one stream of events. Promise: `publish` returns `Ok` only once the broker
//! acknowledged the message, and returns within the configured timeout either way.

mod publisher;
pub mod session;

pub use publisher::{AckTracker, BrokerOptions, Failure, MqttPublisher, Setting};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V5 => "MQTT 5",
            Protocol::V311 => "MQTT 3.1.1",
        }
    }
}

/// The MQTT 5 user property carrying the original `Qlik-Signature`.
pub const SIGNATURE_PROPERTY: &str = "qlik-signature";
pub use qlik_events::butler::REWRITTEN_PROPERTY;

/// One message: QoS 1, retain false, always.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    /// The webhook body, byte for byte.
    pub payload: &'a [u8],
    /// The verified `Qlik-Signature` value, sent as a user property where the protocol has them.
    pub signature: Option<&'a str>,
    /// Set when the payload is not the webhook body as Qlik signed it: the value of the
    /// [`REWRITTEN_PROPERTY`] user property (e.g. `butler-v16`). Never sent with a signature.
    pub rewritten: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message without user properties (alerts, the publish API, task results).
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Message {
            topic,
            payload,
            signature: None,
            rewritten: None,
        }
    }

    /// The MQTT 5 user properties this message carries.
    pub fn user_properties(&self) -> Vec<(&'static str, &'a str)> {
        let signature = self.signature.map(|s| (SIGNATURE_PROPERTY, s));
        let rewritten = self.rewritten.map(|r| (REWRITTEN_PROPERTY, r));
        signature.into_iter().chain(rewritten).collect()
    }
}

/// Why a message was not acknowledged. Shown to the webhook caller in a 503, so it holds no
/// secret (broker URLs are shown redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("no acknowledgement from the broker within {0:?}")]
    Timeout(Duration),
    #[error("broker refused the message: {0}")]
    Refused(String),
}

pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Something that publishes with QoS 1 and waits for the acknowledgement.
pub trait Publish: Send + Sync {
    fn publish<'a>(&'a self, message: Message<'a>) -> PublishFuture<'a>;

    /// A short description for logs, without credentials.
    fn describe(&self) -> String;
}
