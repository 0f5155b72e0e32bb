//! The MQTT channel: the alert's JSON document published QoS 1 on the listener's broker; sent
//! once the broker acknowledged it. A broker that refuses it (e.g. not authorised) fails at once.

use crate::notify::AttemptError;
use relay_mqtt::{Message, Publish, PublishError};

pub async fn publish(
    mqtt: Option<&dyn Publish>,
    topic: &str,
    body: &str,
) -> Result<(), AttemptError> {
    let Some(mqtt) = mqtt else {
        return Err(AttemptError::Permanent(
            "no MQTT connection for alerts".into(),
        ));
    };
    match mqtt.publish(Message::new(topic, body.as_bytes())).await {
        Ok(()) => Ok(()),
        Err(e @ PublishError::Refused(_)) => Err(AttemptError::Permanent(e.to_string())),
        Err(e) => Err(AttemptError::Retry(e.to_string())),
    }
}
