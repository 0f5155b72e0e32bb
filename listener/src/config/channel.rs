//! Alert channels for failed reloads (`tenant.alert.<channel>.reloadAppFailure`): what each
//! channel sends to ([`Target`]), when ([`Rules`]) and what the message holds ([`Message`]).

use super::email::{self, EmailSection, EmailSettings};
use super::value::{ByTag, Check, Flag, KeyPath, Text, Whole};
use qlik_events::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// One alert channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// `teams`, `slack`, `webhook-1`, …: the name deliveries are recorded under.
    pub id: String,
    pub rules: Rules,
    pub message: Message,
    pub target: Target,
}

/// When a channel does not send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// `alertEnableByTag`: alert only apps with this tag.
    pub tag: Option<String>,
    /// Seconds between two alerts for the same [`Rules::rate_key`] on this channel; 0 = no
    /// limit. Butler's channels (Teams, Slack, e-mail) default to 300, as in Butler.
    pub rate_limit_secs: u64,
    /// What the rate limit counts, as Butler keys it.
    pub rate_key: RateKey,
}

/// What a channel's rate limit is kept per (Butler: Teams per reload, Slack and e-mail per app;
/// e-mail also per recipient, since each recipient is its own delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateKey {
    Reload,
    #[default]
    App,
}

impl RateKey {
    /// Butler's key and default window for a channel kind.
    fn of(kind: ChannelKind) -> (RateKey, u64) {
        match kind {
            ChannelKind::Teams => (RateKey::Reload, 300),
            ChannelKind::Slack | ChannelKind::Email => (RateKey::App, 300),
            _ => (RateKey::App, 0),
        }
    }
}

/// What goes into a channel's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub format: Format,
    /// Script-log lines shown from the start and from the end.
    pub head_lines: usize,
    pub tail_lines: usize,
    /// Leave the script log out (`basicContentOnly`).
    pub basic_content_only: bool,
}

impl Default for Message {
    /// Butler's defaults: formatted, 15 + 15 script-log lines.
    fn default() -> Message {
        Message {
            format: Format::Formatted {
                template_file: None,
            },
            head_lines: 15,
            tail_lines: 15,
            basic_content_only: false,
        }
    }
}

/// `messageType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The user's `templateFile`, or the built-in template.
    Formatted { template_file: Option<PathBuf> },
    /// `basicMsgTemplate`: one line of text.
    Basic(String),
}

/// Where a channel sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MS Teams through a Power Automate workflow (`webhookURL`), an Adaptive Card.
    Teams { url: url::Url },
    /// A Slack incoming webhook, with Slack's routing options.
    Slack {
        url: url::Url,
        channel: Option<String>,
        from_user: Option<String>,
        icon_emoji: Option<String>,
    },
    /// Our outgoing webhook: a stable JSON document, HMAC-signed with `secret`.
    Webhook {
        url: url::Url,
        secret: Option<Secret>,
    },
    /// The same document, published QoS 1 on the listener's broker (Node-RED and friends).
    Mqtt { topic: String },
    /// E-mail over SMTP (`Butler.emailNotification.smtp`), one message per recipient.
    Email(EmailSettings),
    /// Plain text on standard output (`consoleNotification`; ours): for the demo and for
    /// trying templates.
    Console,
    /// The webhook's JSON document appended as one line to a file (`fileNotification.path`;
    /// ours): a local audit trail or a hand-off to a log shipper.
    File(PathBuf),
}

/// Which kind of channel, for limits, markup and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Teams,
    Slack,
    Webhook,
    Mqtt,
    Email,
    Console,
    File,
}

impl ChannelKind {
    /// The kind's name in metrics (and the channel id of the first of its kind).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Teams => "teams",
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Mqtt => "mqtt",
            ChannelKind::Email => "email",
            ChannelKind::Console => "console",
            ChannelKind::File => "file",
        }
    }
}

impl Target {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Target::Teams { .. } => ChannelKind::Teams,
            Target::Slack { .. } => ChannelKind::Slack,
            Target::Webhook { .. } => ChannelKind::Webhook,
            Target::Mqtt { .. } => ChannelKind::Mqtt,
            Target::Email(_) => ChannelKind::Email,
            Target::Console => ChannelKind::Console,
            Target::File(_) => ChannelKind::File,
        }
    }
}

impl ChannelConfig {
    /// A channel with Butler's defaults (formatted messages, 15 + 15 script-log lines, no
    /// tag gating or rate limit).
    pub fn new(id: &str, target: Target) -> ChannelConfig {
        ChannelConfig {
            id: id.to_owned(),
            rules: Rules::default(),
            message: Message::default(),
            target,
        }
    }
}

/// `tenant.alert`: one section per channel kind.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Alert {
    /// MS Teams (a Power Automate workflow URL).
    teams_notification: Option<OnFailure<ChannelSection>>,
    /// A Slack incoming webhook.
    slack_notification: Option<OnFailure<ChannelSection>>,
    /// Ours: a signed JSON document POSTed to `urls`.
    webhook_notification: Option<OnFailure<ChannelSection>>,
    /// Ours: the JSON document published on the listener's broker.
    mqtt_notification: Option<OnFailure<ChannelSection>>,
    /// E-mail (the server is `Butler.emailNotification.smtp`).
    email_notification: Option<OnFailure<EmailSection>>,
    /// Ours: text on standard output.
    console_notification: Option<OnFailure<ChannelSection>>,
    /// Ours: one JSON line per alert appended to `path`.
    file_notification: Option<OnFailure<ChannelSection>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(rename = "OnReloadFailure_{T}")]
struct OnFailure<T> {
    /// The alert for a failed reload.
    reload_app_failure: Option<T>,
}

impl<T> Default for OnFailure<T> {
    fn default() -> Self {
        OnFailure {
            reload_app_failure: None,
        }
    }
}

/// A channel's keys (each kind reads the ones that apply to it).
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ChannelSection {
    /// Send alerts on this channel (default false).
    enable: Option<Flag>,
    /// Teams, Slack: where to POST (literal or `${ENV_VAR}`).
    #[serde(rename = "webhookURL")]
    webhook_url: Option<Text>,
    /// Webhook: the URLs to POST to.
    urls: Option<Vec<Text>>,
    /// Webhook: key for `X-Qlik-Relay-Signature`.
    secret: Option<Text>,
    /// `formatted` (default) or `basic`.
    message_type: Option<Text>,
    /// The one-line template used with messageType basic.
    basic_msg_template: Option<Text>,
    /// A handlebars template replacing the built-in one.
    template_file: Option<Text>,
    /// Leave the script log out.
    basic_content_only: Option<Flag>,
    /// Alert only apps with a tag.
    alert_enable_by_tag: Option<ByTag>,
    /// Seconds between two alerts on this channel: Teams per reload, Slack per app, as Butler (default 300); our webhook, MQTT, console and file per app (default 0: none).
    rate_limit: Option<Whole>,
    /// Script-log lines from the start (default 15).
    head_script_log_lines: Option<Whole>,
    /// Script-log lines from the end (default 15).
    tail_script_log_lines: Option<Whole>,
    /// Slack: channel, user name and icon.
    channel: Option<Text>,
    /// Slack: the user name the message is posted as.
    from_user: Option<Text>,
    /// Slack: the icon, as an emoji name (`:rotating_light:`).
    icon_emoji: Option<Text>,
    /// MQTT: the topic to publish to (default `qlikcloud/alerts/reload-failed`).
    topic: Option<Text>,
    /// File: the file to append to (its folder must exist).
    path: Option<Text>,
}

/// Which of a channel section's keys each kind reads (`emailNotification` has a section of its
/// own). The reference documents only these under each kind, and `check-config` warns about a
/// key set where it does nothing (`iconEmoji` for Teams).
pub const KEYS_OF: [(&str, &[&[&str]]); 6] = [
    ("teamsNotification", &[TEMPLATED, RULES, &["webhookURL"]]),
    (
        "slackNotification",
        &[
            TEMPLATED,
            RULES,
            &["webhookURL", "channel", "fromUser", "iconEmoji"],
        ],
    ),
    ("webhookNotification", &[RULES, &["urls", "secret"]]),
    ("mqttNotification", &[RULES, &["topic"]]),
    ("consoleNotification", &[TEMPLATED, RULES]),
    ("fileNotification", &[RULES, &["path"]]),
];

/// Keys of channels whose message is rendered from a template.
const TEMPLATED: &[&str] = &["messageType", "basicMsgTemplate", "templateFile"];
/// Keys of every channel.
const RULES: &[&str] = &[
    "enable",
    "alertEnableByTag",
    "rateLimit",
    "headScriptLogLines",
    "tailScriptLogLines",
    "basicContentOnly",
];

/// Whether channel kind `section` (`teamsNotification`) reads `key`.
pub fn reads(section: &str, key: &str) -> bool {
    KEYS_OF
        .iter()
        .find(|(kind, _)| *kind == section)
        .is_none_or(|(_, groups)| groups.iter().any(|g| g.contains(&key)))
}

impl ChannelSection {
    /// The keys written in this section.
    fn written(&self) -> Vec<&'static str> {
        [
            ("enable", self.enable.is_some()),
            ("webhookURL", self.webhook_url.is_some()),
            ("urls", self.urls.is_some()),
            ("secret", self.secret.is_some()),
            ("messageType", self.message_type.is_some()),
            ("basicMsgTemplate", self.basic_msg_template.is_some()),
            ("templateFile", self.template_file.is_some()),
            ("basicContentOnly", self.basic_content_only.is_some()),
            ("alertEnableByTag", self.alert_enable_by_tag.is_some()),
            ("rateLimit", self.rate_limit.is_some()),
            ("headScriptLogLines", self.head_script_log_lines.is_some()),
            ("tailScriptLogLines", self.tail_script_log_lines.is_some()),
            ("channel", self.channel.is_some()),
            ("fromUser", self.from_user.is_some()),
            ("iconEmoji", self.icon_emoji.is_some()),
            ("topic", self.topic.is_some()),
            ("path", self.path.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

/// Checks a tenant's `alert` section. `subscription` is the events subscription, which the
/// MQTT channel must not publish under.
pub fn check_alert(
    c: &mut Check<'_>,
    at: &KeyPath,
    alert: Alert,
    subscription: &str,
) -> Vec<ChannelConfig> {
    let mut channels = Vec::new();
    let sections = [
        (
            "teamsNotification",
            ChannelKind::Teams,
            alert.teams_notification,
        ),
        (
            "slackNotification",
            ChannelKind::Slack,
            alert.slack_notification,
        ),
        (
            "webhookNotification",
            ChannelKind::Webhook,
            alert.webhook_notification,
        ),
        (
            "mqttNotification",
            ChannelKind::Mqtt,
            alert.mqtt_notification,
        ),
        (
            "consoleNotification",
            ChannelKind::Console,
            alert.console_notification,
        ),
        (
            "fileNotification",
            ChannelKind::File,
            alert.file_notification,
        ),
    ];
    for (key, kind, section) in sections {
        let Some(s) = section.and_then(|s| s.reload_app_failure) else {
            continue;
        };
        if Flag::or(s.enable, false) {
            let at = at.key(key).key("reloadAppFailure");
            for written in s.written() {
                if !reads(key, written) {
                    c.warnings.push(format!(
                        "{}: does nothing in {key} (it is for another kind of channel)",
                        at.key(written)
                    ));
                }
            }
            check_channel(c, &at, kind, s, subscription, &mut channels);
        }
    }
    if let Some(mut s) = alert.email_notification.and_then(|s| s.reload_app_failure) {
        if Flag::or(s.enable, false) {
            let at = at.key("emailNotification.reloadAppFailure");
            let by_tag = s.alert_enable_by_tag.take();
            let rules = check_rules(c, &at, ChannelKind::Email, by_tag, s.rate_limit);
            let (head_lines, tail_lines) =
                check_lines(c, &at, s.head_script_log_lines, s.tail_script_log_lines);
            let message = Message {
                head_lines,
                tail_lines,
                ..Message::default()
            };
            if let Some(settings) = email::check_email(c, &at, s) {
                channels.push(ChannelConfig {
                    id: "email".into(),
                    rules,
                    message,
                    target: Target::Email(settings),
                });
            }
        }
    }
    channels
}

fn check_channel(
    c: &mut Check<'_>,
    at: &KeyPath,
    kind: ChannelKind,
    mut s: ChannelSection,
    subscription: &str,
    channels: &mut Vec<ChannelConfig>,
) {
    let rules = check_rules(c, at, kind, s.alert_enable_by_tag.take(), s.rate_limit);
    let message = check_message(c, at, &s);
    let mut push = |id: String, target: Target| {
        channels.push(ChannelConfig {
            id,
            rules: rules.clone(),
            message: message.clone(),
            target,
        })
    };
    match kind {
        ChannelKind::Teams => {
            if let Some(url) = check_url(c, &s.webhook_url, &at.key("webhookURL")) {
                push("teams".into(), Target::Teams { url });
            }
        }
        ChannelKind::Slack => {
            if let Some(url) = check_url(c, &s.webhook_url, &at.key("webhookURL")) {
                let text = |t: &Option<Text>| Text::of(t).map(str::to_owned);
                let target = Target::Slack {
                    url,
                    channel: text(&s.channel),
                    from_user: text(&s.from_user),
                    icon_emoji: text(&s.icon_emoji),
                };
                push("slack".into(), target);
            }
        }
        ChannelKind::Webhook => {
            let secret = c.secret(&s.secret, &at.key("secret"));
            let Some(urls) = s.urls.take() else {
                c.error(&at.key("urls"), "missing: a list of URLs to POST alerts to");
                return;
            };
            for (i, raw) in urls.into_iter().enumerate() {
                if let Some(url) = check_url(c, &Some(raw), &at.key("urls").item(i)) {
                    let secret = secret.clone();
                    push(
                        format!("webhook-{}", i + 1),
                        Target::Webhook { url, secret },
                    );
                }
            }
        }
        ChannelKind::Mqtt => {
            let topic_at = at.key("topic");
            let before = c.errors.len();
            let topic = c.topic(&s.topic, &topic_at, super::DEFAULT_ALERT_TOPIC);
            if c.errors.len() > before {
                return;
            }
            if super::topic_matches(subscription, &topic) {
                c.error(&topic_at, format!("lies under the subscription {subscription}: the listener would receive its own alerts"));
            } else {
                push("mqtt".into(), Target::Mqtt { topic });
            }
        }
        ChannelKind::Console => push("console".into(), Target::Console),
        ChannelKind::File => {
            let file_at = at.key("path");
            if let Some(name) = c.required(&s.path, &file_at) {
                let file = c.base.join(name);
                match file.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                        c.error(&file_at, format!("no such directory: {}", dir.display()))
                    }
                    _ => push("file".into(), Target::File(file)),
                }
            }
        }
        // Its section is an `EmailSection`, checked in `check_alert`.
        ChannelKind::Email => {}
    }
}

/// `alertEnableByTag` and `rateLimit`.
fn check_rules(
    c: &mut Check<'_>,
    at: &KeyPath,
    kind: ChannelKind,
    by_tag: Option<ByTag>,
    rate_limit: Option<Whole>,
) -> Rules {
    let by_tag = by_tag.unwrap_or_default();
    let tag = if Flag::or(by_tag.enable, false) {
        c.required(&by_tag.tag, &at.key("alertEnableByTag.tag"))
    } else {
        None
    };
    let (rate_key, default_secs) = RateKey::of(kind);
    let range = 0..=30 * 24 * 3600;
    Rules {
        tag,
        rate_limit_secs: c.whole(rate_limit, &at.key("rateLimit"), range, default_secs),
        rate_key,
    }
}

fn check_message(c: &mut Check<'_>, at: &KeyPath, s: &ChannelSection) -> Message {
    let basic = match Text::of(&s.message_type) {
        None | Some("formatted") => false,
        Some("basic") => true,
        Some(other) => {
            let reason = format!("'{other}' is not formatted or basic");
            c.error(&at.key("messageType"), reason);
            false
        }
    };
    let format = match Text::of(&s.basic_msg_template) {
        Some(t) if basic && !t.is_empty() => Format::Basic(t.to_owned()),
        _ if basic => {
            c.error(&at.key("basicMsgTemplate"), "missing: messageType is basic");
            Format::Basic(String::new())
        }
        _ => Format::Formatted {
            template_file: c.file(&s.template_file, &at.key("templateFile")),
        },
    };
    let (head_lines, tail_lines) =
        check_lines(c, at, s.head_script_log_lines, s.tail_script_log_lines);
    Message {
        format,
        head_lines,
        tail_lines,
        basic_content_only: Flag::or(s.basic_content_only, false),
    }
}

/// `headScriptLogLines` and `tailScriptLogLines`.
fn check_lines(
    c: &mut Check<'_>,
    at: &KeyPath,
    head: Option<Whole>,
    tail: Option<Whole>,
) -> (usize, usize) {
    let mut lines = |v, key| c.whole(v, &at.key(key), 0..=1000, 15) as usize;
    (
        lines(head, "headScriptLogLines"),
        lines(tail, "tailScriptLogLines"),
    )
}

/// An http(s) URL that may carry a secret (Teams' `sig=`, Slack's path): `${ENV}` works, and
/// the value is never shown.
fn check_url(c: &mut Check<'_>, v: &Option<Text>, at: &KeyPath) -> Option<url::Url> {
    if v.is_none() {
        c.error(at, "missing");
        return None;
    }
    let raw = c.secret(v, at)?;
    match url::Url::parse(String::from_utf8_lossy(raw.expose()).trim()) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            c.error(at, "not an http(s) URL");
            None
        }
    }
}
