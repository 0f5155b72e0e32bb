//! Butler's MQTT integration, incoming side: a message on `taskStartTopic` starts a Qlik Sense
//! Enterprise task through the QRS API (design.md §4–5).
//!
//! Topics under `subscriptionRootTopic` are dispatched through a small routing table
//! ([`Route`]), so handlers for further topics plug in beside the task-start one.
//!
//! Promises: invalid payloads and refused tasks are logged and acknowledged, never crash the
//! loop; an allow-list, when configured, refuses every other task; each outcome (started with
//! its execution session id / not started / failed with the reason / refused) is logged and
//! published as JSON on the result topic.

use super::qrs::{self, Qrs, TaskOutcome, TaskRequest};
use crate::config::ButlerMqttConfig;
use crate::metrics::{TaskMetric, METRICS};
use crate::subscriber::Message;
use relay_mqtt::Publish;
use serde_json::json;
use std::sync::Arc;

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    StartTask,
}

/// With a shared journal, the same task-start message (same topic and payload) within this
/// long is one start: every listener of the group receives it and one of them starts the task.
pub const SAME_START_MS: i64 = 60_000;

pub struct Tasks {
    config: ButlerMqttConfig,
    /// A journal shared with other listeners: one of them starts each task.
    shared: Option<crate::journal::Journal>,
    qrs: Qrs,
    publisher: Arc<dyn Publish>,
    routes: Vec<(String, Route)>,
}

impl Tasks {
    pub fn new(
        config: ButlerMqttConfig,
        qrs: Qrs,
        publisher: Arc<dyn Publish>,
        journal: &crate::journal::Journal,
    ) -> Tasks {
        let routes = vec![(config.task_start_topic.clone(), Route::StartTask)];
        Tasks {
            shared: journal.shared().is_some().then(|| journal.clone()),
            config,
            qrs,
            publisher,
            routes,
        }
    }

    fn route(&self, topic: &str) -> Option<Route> {
        self.routes
            .iter()
            .find(|(filter, _)| crate::config::topic_matches(filter, topic))
            .map(|(_, r)| *r)
    }

    /// Handles messages until the channel closes.
    pub async fn run(self: Arc<Self>, mut messages: crate::subscriber::Messages) {
        while let Some(message) = messages.recv().await {
            match self.route(&message.topic) {
                Some(Route::StartTask) => self.start_task(&message).await,
                None => tracing::debug!(topic = %message.topic, "no handler for this topic"),
            }
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "could not acknowledge");
            }
        }
    }

    async fn start_task(&self, message: &Message) {
        let request = match qrs::parse_request(&message.payload) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(topic = %message.topic, bytes = message.payload.len(), reason = %reason, "invalid task-start payload; ignored");
                METRICS.task(TaskMetric::Invalid);
                self.publish_result(json!({ "outcome": "invalid", "reason": reason }))
                    .await;
                return;
            }
        };
        if let Some(refused) = self.refused(&request) {
            tracing::warn!(task = %refused, "task not in taskAllowList; refused");
            METRICS.task(TaskMetric::Refused);
            self.publish_result(
                json!({ "outcome": "refused", "task": refused, "reason": "not in taskAllowList" }),
            )
            .await;
            return;
        }
        if !self.first_to_start(message).await {
            return;
        }
        let outcome = self.qrs.start(&request).await;
        METRICS.task(match outcome {
            TaskOutcome::Started(_) => TaskMetric::Started,
            TaskOutcome::NotStarted => TaskMetric::NotStarted,
            TaskOutcome::Failed(_) => TaskMetric::Failed,
        });
        let task = describe(&request);
        let result = match &outcome {
            TaskOutcome::Started(session) => {
                tracing::info!(task = %task, session_id = session.as_deref().unwrap_or("-"), "task started");
                json!({ "outcome": "started", "task": task, "executionSessionId": session })
            }
            TaskOutcome::NotStarted => {
                tracing::warn!(task = %task, "QRS did not start the task");
                json!({ "outcome": "not_started", "task": task })
            }
            TaskOutcome::Failed(reason) => {
                tracing::error!(task = %task, reason = %reason, "task start failed");
                json!({ "outcome": "failed", "task": task, "reason": reason })
            }
        };
        self.publish_result(result).await;
    }

    /// With a shared journal: whether this listener is the one of the group to start the task
    /// (the first to claim this message within [`SAME_START_MS`]). When the journal cannot be
    /// reached, this listener does not start it (another may), and the result topic says so.
    async fn first_to_start(&self, message: &Message) -> bool {
        let Some(journal) = &self.shared else {
            return true;
        };
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        digest.update(message.topic.as_bytes());
        digest.update([0]);
        digest.update(&message.payload);
        let hex: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!("task-start:{hex}");
        match journal.claim_slot(&key, SAME_START_MS).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(topic = %message.topic, "task start taken by another listener of the group");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim the task start in the shared journal; not started");
                METRICS.task(TaskMetric::Failed);
                self.publish_result(json!({ "outcome": "failed", "reason": format!("the shared journal cannot be reached: {e}") }))
                    .await;
                false
            }
        }
    }

    /// The first requested task the allow-list does not contain.
    fn refused(&self, request: &TaskRequest) -> Option<String> {
        let allowed = self.config.task_allow_list.as_ref()?;
        let ok = |t: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(t));
        match request {
            TaskRequest::Id(id) | TaskRequest::Name(id) => (!ok(id)).then(|| id.clone()),
            TaskRequest::Many(ids) => ids.iter().find(|id| !ok(id)).cloned(),
        }
    }

    async fn publish_result(&self, result: serde_json::Value) {
        let body = result.to_string();
        let message = relay_mqtt::Message::new(&self.config.task_result_topic, body.as_bytes());
        if let Err(e) = self.publisher.publish(message).await {
            tracing::warn!(error = %e, topic = %self.config.task_result_topic, "task result not published");
        }
    }
}

fn describe(request: &TaskRequest) -> String {
    match request {
        TaskRequest::Id(id) => id.clone(),
        TaskRequest::Name(name) => format!("name:{name}"),
        TaskRequest::Many(ids) => ids.join(","),
    }
}
