//! Publishing an event to the broker, and knowing that the broker took it.
//!
//! Two real implementations sit behind [`Publish`] (from `relay-mqtt`): [`mqtt`] (any MQTT
//! broker) and [`iot_core::IotCorePublisher`] (AWS IoT Core's HTTPS data plane).

pub mod iot_core;
pub mod mqtt;

pub use relay_mqtt::{Message, Publish, PublishError, PublishFuture, SIGNATURE_PROPERTY};
