//! The console channel: the alert's text on the listener's standard output.
//!
//! Promises: control characters in values (other than line breaks and tabs) are shown
//! escaped, so an app name cannot drive the operator's terminal.

use super::{Payload, Traits};
use crate::config::{Format, Message};
use crate::notify::render::{self, Markup, RenderError};
use crate::notify::AttemptError;
use serde_json::Value;

pub const TEMPLATE: &str = include_str!("../../../templates/console-reload-failed.handlebars");
pub const OPERATOR_TEMPLATE: &str = include_str!("../../../templates/console-operator.handlebars");

pub const TRAITS: Traits = Traits {
    script_log_limit: crate::script_log::SCRIPT_LOG_FIELD_MAX,
    for_people: true,
    markup: Markup::Plain,
    line_break: "\n",
};

/// The user's template file, `basicMsgTemplate` with `messageType: basic`, or the built-in
/// template.
pub fn render(message: &Message, data: &Value) -> Result<(Payload, Option<String>), RenderError> {
    let (text, fallback) = match &message.format {
        Format::Basic(template) => render::render_terminal(template, data)
            .map(|text| (text, None))
            .map_err(|e| RenderError::new(format!("basicMsgTemplate: {e}")))?,
        Format::Formatted { template_file } => {
            render::user_or_builtin(template_file.as_deref(), TEMPLATE, |t| {
                render::render_terminal(t, data)
            })?
        }
    };
    Ok((Payload::text(text), fallback))
}

pub fn render_operator(data: &Value) -> Result<Payload, String> {
    render::render_terminal(OPERATOR_TEMPLATE, data).map(Payload::text)
}

pub fn print(text: &str) -> Result<(), AttemptError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| AttemptError::Retry(format!("cannot write to stdout: {e}")))
}
