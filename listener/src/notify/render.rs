//! What every channel's rendering shares: the alert data as a channel sees it, Handlebars with
//! the right escaping, user templates with a fallback, and cutting long script-log fields. The
//! channels' own templates and message shapes are in `notify::channel`. Pure: no I/O but
//! reading a user's template file.
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

use handlebars::Handlebars;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

impl RenderError {
    pub fn new(reason: String) -> RenderError {
        RenderError(reason)
    }
}

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

/// `messageType: basic`: the text template (`basicMsgTemplate`), values made inert in `markup`.
pub fn basic_text(template: &str, data: &Value, markup: Markup) -> Result<String, RenderError> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(move |s| markup.escape(s));
    hb.render_template(template, data)
        .map_err(|e| RenderError(format!("basicMsgTemplate: {e}")))
}

/// Renders the user's template file if there is one and it works, else the built-in
/// template; the second value says why the user's was not used.
pub fn user_or_builtin<T>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triple_stash_is_escaped_only_where_it_is_one() {
        for (template, expected) in [
            ("{{{a}}}", "{{a}}"),
            ("x {{{a}}} y {{b}} {{{c.d}}}", "x {{a}} y {{b}} {{c.d}}"),
            (
                "{{{{raw}}}} {{{a}}} {{{{/raw}}}}",
                "{{{{raw}}}} {{a}} {{{{/raw}}}}",
            ),
            ("{{{ unclosed", "{{{ unclosed"),
            ("no braces", "no braces"),
        ] {
            assert_eq!(escape_triple_stash(template), expected, "{template}");
        }
    }
}
