//! Slack (an incoming webhook): Block Kit JSON POSTed, with the channel's routing options.
//!
//! Promises: values cannot write Slack's markup (`&`, `<` and `>` escaped as Slack asks: no
//! `<!channel>`, `<@user>` or `<https://evil|click>`) while the template's own links work;
//! `channel`, `username` and `icon_emoji` from the config are set whatever the template says;
//! script-log fields stay under Slack's 3,000 characters per section.

use super::{Payload, Traits};
use crate::config::{ChannelConfig, Format, Target};
use crate::notify::render::{self, Markup, RenderError};
use serde_json::{json, Value};

pub const TEMPLATE: &str = include_str!("../../../templates/slack-reload-failed.handlebars");
pub const OPERATOR_TEMPLATE: &str = include_str!("../../../templates/slack-operator.handlebars");

pub const TRAITS: Traits = Traits {
    script_log_limit: 2_500,
    for_people: true,
    markup: Markup::Slack,
    line_break: "\n",
};

pub fn render(
    channel: &ChannelConfig,
    data: &Value,
) -> Result<(Payload, Option<String>), RenderError> {
    let (mut body, fallback) = match &channel.message.format {
        Format::Basic(template) => {
            let text = render::basic_text(template, data, TRAITS.markup)?;
            (json!({ "text": text }), None)
        }
        Format::Formatted { template_file } => {
            render::user_or_builtin(template_file.as_deref(), TEMPLATE, |t| {
                render::render_json(t, data, TRAITS.markup)
            })?
        }
    };
    routing(&channel.target, &mut body);
    Ok((Payload::json(&body), fallback))
}

pub fn render_operator(target: &Target, data: &Value) -> Result<Payload, String> {
    let mut body = render::render_json(OPERATOR_TEMPLATE, data, TRAITS.markup)?;
    routing(target, &mut body);
    Ok(Payload::json(&body))
}

/// Slack's routing options (`channel`, `username`, `icon_emoji`) set on `body`, whatever the
/// template said.
fn routing(target: &Target, body: &mut Value) {
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
