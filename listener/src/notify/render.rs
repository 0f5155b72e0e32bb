//! Turning alert data into the message a channel sends. Pure: no I/O but reading a user's
//! template file.
//!
//! Promises:
//! - JSON templates (Teams, Slack) always yield valid JSON: values are escaped for a JSON
//!   string (quotes, backslashes, newlines, control characters), and the result is parsed
//!   before it is sent;
//! - a user template that fails to render or yields invalid JSON falls back to the built-in
//!   template, and the reason is returned for the log;
//! - script-log fields are cut to the channel's line counts and size limit, with a marker;
//! - values cannot write the channel's markup, while templates keep theirs: for Slack, `&`,
//!   `<` and `>` in values are escaped as Slack asks (no `<!channel>`, `<@user>` or
//!   `<https://evil|click>`); for Teams, a value's `](` is broken with a zero-width space so it
//!   cannot form a Markdown link (`[click](https://evil)`). Bare URLs are still linked by the
//!   clients themselves.

use crate::alert::AlertData;
use crate::config::{ChannelConfig, ChannelKind, Format, Target};
use handlebars::Handlebars;
use serde_json::{json, Value};

pub const TEAMS_TEMPLATE: &str = include_str!("../../templates/teams-reload-failed.handlebars");
pub const SLACK_TEMPLATE: &str = include_str!("../../templates/slack-reload-failed.handlebars");
pub const EMAIL_TEMPLATE: &str = include_str!("../../templates/email-reload-failed.handlebars");
pub const CONSOLE_TEMPLATE: &str = include_str!("../../templates/console-reload-failed.handlebars");

/// Most characters of each script-log field a channel gets (Teams cards and Slack sections
/// are limited in size; Slack's section text to 3000 characters).
fn script_log_limit(kind: ChannelKind) -> usize {
    match kind {
        ChannelKind::Teams => 8_000,
        ChannelKind::Slack => 2_500,
        ChannelKind::Webhook
        | ChannelKind::Mqtt
        | ChannelKind::Email
        | ChannelKind::Console
        | ChannelKind::File => SCRIPT_LOG_FIELD_MAX,
    }
}

pub const TRUNCATED: &str = "… [truncated]";

/// The most any channel takes of a script-log field; the alert data (and the journal) keep no
/// more than this.
pub const SCRIPT_LOG_FIELD_MAX: usize = 64_000;

/// The message for `channel`, and why the built-in template was used instead of the user's.
#[derive(Debug)]
pub struct Rendered {
    pub body: Value,
    pub fallback: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

impl RenderError {
    pub fn new(reason: String) -> RenderError {
        RenderError(reason)
    }
}

/// The alert data as this channel sees it (JSON, for templates): its script-log lines, size
/// limits and options.
pub fn channel_data(channel: &ChannelConfig, data: &AlertData) -> Value {
    let mut d = data.clone();
    let limit = script_log_limit(channel.target.kind());
    let message = &channel.message;
    let head = first_lines(&data.script_log_head, message.head_lines);
    let tail = last_lines(&data.script_log_tail, message.tail_lines);
    let (head, tail) = if message.basic_content_only {
        (String::new(), String::new())
    } else {
        (cut_end(&head, limit), cut_start(&tail, limit))
    };
    // Butler's meaning: the configured counts (none with `basicContentOnly`).
    let (head_count, tail_count) = match message.basic_content_only {
        true => (0, 0),
        false => (message.head_lines, message.tail_lines),
    };
    d.script_log_head_count = head_count;
    d.script_log_tail_count = tail_count;
    d.script_log_head = head;
    d.script_log_tail = tail;
    let mut value = serde_json::to_value(d).unwrap_or_default();
    // What people read shows Butler's numbers as Butler does; machine-readable bodies keep
    // numbers.
    if matches!(
        channel.target.kind(),
        ChannelKind::Teams | ChannelKind::Slack | ChannelKind::Email | ChannelKind::Console
    ) {
        for key in BUTLER_GROUPED {
            if let Some(n) = value.get(key).and_then(Value::as_u64) {
                value[key] = Value::String(grouped(n));
            }
        }
    }
    value
}

/// Butler's numbers that it formats for people (`toLocaleString()`).
const BUTLER_GROUPED: [&str; 4] = [
    "peakMemoryBytes",
    "rowLimit",
    "sizeMemoryBytes",
    "appFileSize",
];

/// `n` with thousands grouped as Node.js does by default (`187,236,352`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the message for `channel` from its [`channel_data`].
pub fn render(channel: &ChannelConfig, data: &Value) -> Result<Rendered, RenderError> {
    let (builtin, markup) = match &channel.target {
        Target::Console => {
            let (text, fallback) = render_console(channel, data)?;
            return Ok(Rendered {
                body: Value::String(text),
                fallback,
            });
        }
        Target::Webhook { .. } | Target::Mqtt { .. } | Target::Email(_) | Target::File(_) => {
            return Ok(Rendered {
                body: json!({ "schemaVersion": 1, "kind": "qlik-cloud-reload-failed", "alert": data }),
                fallback: None,
            });
        }
        Target::Teams { .. } => (TEAMS_TEMPLATE, Markup::Teams),
        Target::Slack { .. } => (SLACK_TEMPLATE, Markup::Slack),
    };
    let mut rendered = match &channel.message.format {
        Format::Basic(template) => Rendered {
            body: basic(channel, template, data)?,
            fallback: None,
        },
        Format::Formatted { template_file } => {
            let (body, fallback) = user_or_builtin(template_file.as_deref(), builtin, |t| {
                render_json(t, data, markup)
            })?;
            Rendered { body, fallback }
        }
    };
    slack_routing(&channel.target, &mut rendered.body);
    Ok(rendered)
}

/// Slack's routing options (`channel`, `username`, `icon_emoji`) set on `body`, whatever the
/// template said.
pub fn slack_routing(target: &Target, body: &mut Value) {
    if let Target::Slack {
        channel,
        from_user,
        icon_emoji,
        ..
    } = target
    {
        for (key, value) in [
            ("channel", channel),
            ("username", from_user),
            ("icon_emoji", icon_emoji),
        ] {
            if let (Some(v), Some(obj)) = (value, body.as_object_mut()) {
                obj.insert(key.to_owned(), json!(v));
            }
        }
    }
}

/// `text` on one line (an e-mail subject): line breaks joined with spaces.
pub fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A text template for the terminal: values with control characters (other than line breaks
/// and tabs) shown escaped.
pub fn render_terminal(template: &str, data: &Value) -> Result<String, String> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(terminal_safe);
    hb.render_template(template, data)
        .map_err(|e| e.to_string())
}

/// An e-mail: the subject (a text template) and the HTML body (values HTML-escaped), from the
/// user's template file or the built-in one.
pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub fallback: Option<String>,
}

pub fn render_email(
    settings: &crate::config::EmailSettings,
    data: &Value,
) -> Result<RenderedEmail, RenderError> {
    let mut text = Handlebars::new();
    text.register_escape_fn(handlebars::no_escape);
    let subject = text
        .render_template(&settings.subject, data)
        .map_err(|e| RenderError(format!("subject: {e}")))?;
    // A subject is one line.
    let subject = one_line(&subject);
    let html = Handlebars::new();
    let (html, fallback) =
        user_or_builtin(settings.body_template.as_deref(), EMAIL_TEMPLATE, |t| {
            html.render_template(t, data).map_err(|e| e.to_string())
        })?;
    Ok(RenderedEmail {
        subject,
        html,
        fallback,
    })
}

/// `messageType: basic`: the text template, wrapped in the channel's simplest message.
fn basic(channel: &ChannelConfig, template: &str, data: &Value) -> Result<Value, RenderError> {
    let mut hb = Handlebars::new();
    let markup = Markup::of(channel.target.kind());
    hb.register_escape_fn(move |s| markup.escape(s));
    let text = hb
        .render_template(template, data)
        .map_err(|e| RenderError(format!("basicMsgTemplate: {e}")))?;
    Ok(match channel.target {
        Target::Teams { .. } => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.5",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }]
                }
            }]
        }),
        _ => json!({ "text": text }),
    })
}

/// The console channel's text: the user's template file, `basicMsgTemplate` with
/// `messageType: basic`, or the built-in one. Control characters in values (other than line
/// breaks and tabs) are shown escaped, so an app name cannot drive the operator's terminal.
pub fn render_console(
    channel: &ChannelConfig,
    data: &Value,
) -> Result<(String, Option<String>), RenderError> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(terminal_safe);
    let render = |template: &str| hb.render_template(template, data);
    match &channel.message.format {
        Format::Basic(template) => render(template)
            .map(|text| (text, None))
            .map_err(|e| RenderError(format!("basicMsgTemplate: {e}"))),
        Format::Formatted { template_file } => {
            user_or_builtin(template_file.as_deref(), CONSOLE_TEMPLATE, |t| {
                render(t).map_err(|e| e.to_string())
            })
        }
    }
}

/// Renders the user's template file if there is one and it works, else the built-in
/// template; the second value says why the user's was not used.
fn user_or_builtin<T>(
    user: Option<&std::path::Path>,
    builtin: &str,
    render: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, Option<String>), RenderError> {
    let fallback = match user {
        None => None,
        Some(path) => {
            let rendered = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|t| render(&t).map_err(|e| format!("{}: {e}", path.display())));
            match rendered {
                Ok(out) => return Ok((out, None)),
                Err(reason) => Some(reason),
            }
        }
    };
    Ok((render(builtin).map_err(RenderError)?, fallback))
}

/// `s` with control characters other than `\n` and `\t` written as `\u{..}`.
fn terminal_safe(s: &str) -> String {
    escape_controls(s, &['\n', '\t'])
}

/// `s` with its control characters, except those in `keep`, written as `\u{..}`: text that
/// cannot drive a terminal.
pub fn escape_controls(s: &str, keep: &[char]) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && !keep.contains(&c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The text markup of a chat channel, which values must not be able to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Slack mrkdwn: `<…>` links and mentions, `&` entities.
    Slack,
    /// Adaptive Card Markdown: `[text](url)` links.
    Teams,
    /// No markup (the value is used as it is).
    Plain,
}

impl Markup {
    fn of(kind: ChannelKind) -> Markup {
        match kind {
            ChannelKind::Slack => Markup::Slack,
            ChannelKind::Teams => Markup::Teams,
            _ => Markup::Plain,
        }
    }

    /// `value` made inert in this markup.
    pub fn escape(self, value: &str) -> String {
        match self {
            Markup::Slack => value
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
            Markup::Teams => value.replace("](", "]\u{200B}("),
            Markup::Plain => value.to_owned(),
        }
    }
}

/// Renders a JSON template with values escaped for JSON strings and made inert in `markup`,
/// and parses the result.
///
/// Triple braces (`{{{scriptLogTail}}}`) are escaped too: Butler's templates use them for
/// values Butler escaped for JSON beforehand, so they give the same text here, and a quote or a
/// line break in any value cannot break the JSON.
pub fn render_json(template: &str, data: &Value, markup: Markup) -> Result<Value, String> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(move |s| json_string_content(&markup.escape(s)));
    let template = escape_triple_stash(template);
    let text = hb
        .render_template(&template, data)
        .map_err(|e| format!("template error: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("the template did not produce valid JSON: {e}"))
}

/// `{{{expression}}}` (unescaped output) written as `{{expression}}`; `{{{{raw}}}}` blocks and
/// everything else are left alone.
fn escape_triple_stash(template: &str) -> std::borrow::Cow<'_, str> {
    if !template.contains("{{{") {
        return template.into();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{{") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let closing = from[3..].find("}}}");
        match closing {
            Some(end) if !from[3..].starts_with('{') && !from[3..3 + end].contains("{{") => {
                out.push_str("{{");
                out.push_str(&from[3..3 + end]);
                out.push_str("}}");
                rest = &from[3 + end + 3..];
            }
            _ => {
                out.push_str("{{{");
                rest = &from[3..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// `s` escaped for use between the quotes of a JSON string.
fn json_string_content(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Keeps the start of `text` within `max` characters.
pub fn cut_end(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text
        .chars()
        .take(max.saturating_sub(TRUNCATED.chars().count()))
        .collect();
    format!("{kept}{TRUNCATED}")
}

/// Keeps the end of `text` (the interesting part of a tail) within `max` characters.
pub fn cut_start(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(TRUNCATED.chars().count());
    let kept: String = text.chars().skip(count - keep).collect();
    format!("{TRUNCATED}{kept}")
}

#[cfg(test)]
mod tests;
