//! Microsoft Teams (a Workflows webhook): an Adaptive Card POSTed as JSON.
//!
//! Promises: values cannot form a Markdown link in the card (a value's `](` is broken with a
//! zero-width space) while the template's own links work; a card stays under Teams' size limit
//! (script-log fields of at most 8,000 characters each).

use super::{Payload, Traits};
use crate::config::{Format, Message};
use crate::notify::render::{self, Markup, RenderError};
use serde_json::{json, Value};

pub const TEMPLATE: &str = include_str!("../../../templates/teams-reload-failed.handlebars");
pub const OPERATOR_TEMPLATE: &str = include_str!("../../../templates/teams-operator.handlebars");

pub const TRAITS: Traits = Traits {
    script_log_limit: 8_000,
    for_people: true,
    markup: Markup::Teams,
    // Adaptive Card text is Markdown: one line break is a space, so the script log came out as
    // one run-on paragraph. A blank line between lines is a line break in Teams.
    line_break: "\n\n",
};

pub fn render(message: &Message, data: &Value) -> Result<(Payload, Option<String>), RenderError> {
    match &message.format {
        Format::Basic(template) => {
            let text = render::basic_text(template, data, TRAITS.markup)?;
            Ok((Payload::json(&card(&text)), None))
        }
        Format::Formatted { template_file } => {
            let (body, fallback) =
                render::user_or_builtin(template_file.as_deref(), TEMPLATE, |t| {
                    render::render_json(t, data, TRAITS.markup)
                })?;
            Ok((Payload::json(&body), fallback))
        }
    }
}

pub fn render_operator(data: &Value) -> Result<Payload, String> {
    render::render_json(OPERATOR_TEMPLATE, data, TRAITS.markup).map(|b| Payload::json(&b))
}

/// `messageType: basic`: the text in the simplest Adaptive Card.
fn card(text: &str) -> Value {
    json!({
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
    })
}
