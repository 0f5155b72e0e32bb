//! Users' alert templates, checked before any alert needs them (`check-config` and start-up):
//! each compiles, and each variable it shows is one the alert data has.
//!
//! Why: a broken `templateFile` was found only by `preview` (at alert time the built-in template
//! is sent instead, with a warning in the log), and a misspelt variable (`{{errorMesage}}`)
//! renders empty without a word.
//!
//! Promises: a template that cannot be read or compiled is an error naming its key; each
//! unknown variable is a warning naming its key and the variable. Limits: variables are found
//! by rendering with Handlebars' strict mode against empty alert data, so a variable used only
//! inside a block that does not render for it (`{{#each genericUrls}}`, `{{#if …}}`) or as a
//! helper's argument is not checked.

use crate::alert::AlertData;
use crate::config::{Config, Format, Target};
use handlebars::{Handlebars, RenderErrorReason};
use serde_json::Value;
use std::path::Path;

/// What is wrong with the configured templates: errors (exit 1) and warnings, key path first.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks every user template of every tenant's channels.
pub fn check(config: &Config) -> Findings {
    let mut found = Findings::default();
    for tenant in &config.tenants {
        for channel in &tenant.channels {
            let section = match &channel.target {
                Target::Teams { .. } => "teamsNotification",
                Target::Slack { .. } => "slackNotification",
                Target::Console => "consoleNotification",
                Target::Email(_) => "emailNotification",
                // Their document is fixed: no template.
                Target::Webhook { .. } | Target::Mqtt { .. } | Target::File(_) => continue,
            };
            let at = format!("{}.alert.{section}.reloadAppFailure", tenant.path);
            if let Target::Email(email) = &channel.target {
                found.text(&format!("{at}.subject"), &email.subject);
                if let Some(file) = &email.body_template {
                    found.file(&format!("{at}.htmlTemplateFile"), file);
                }
                continue;
            }
            match &channel.message.format {
                Format::Basic(template) => found.text(&format!("{at}.basicMsgTemplate"), template),
                Format::Formatted {
                    template_file: Some(file),
                } => found.file(&format!("{at}.templateFile"), file),
                Format::Formatted {
                    template_file: None,
                } => {}
            }
        }
    }
    found
}

impl Findings {
    fn file(&mut self, at: &str, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.text(at, &text),
            Err(e) => self
                .errors
                .push(format!("{at}: cannot read {}: {e}", path.display())),
        }
    }

    fn text(&mut self, at: &str, template: &str) {
        match unknown_variables(template) {
            Err(e) => self.errors.push(format!(
                "{at}: the template does not compile: {e} (alerts would use the built-in template)"
            )),
            Ok(names) => self.warnings.extend(names.into_iter().map(|name| {
                format!("{at}: {{{{{name}}}}} is not a variable of the alert data: it renders empty (a typo? `qlik-listener preview` shows the variables)")
            })),
        }
    }
}

/// The variables `template` shows that the alert data does not have, or why it does not
/// compile.
pub fn unknown_variables(template: &str) -> Result<Vec<String>, String> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_template_string("t", template)
        .map_err(|e| e.to_string())?;
    let mut data = serde_json::to_value(AlertData::default()).unwrap_or(Value::Null);
    let mut unknown = Vec::new();
    // One missing variable per render: each found is added (empty) and the render repeated.
    for _ in 0..100 {
        let Err(e) = hb.render("t", &data) else {
            break;
        };
        match e.reason() {
            RenderErrorReason::MissingVariable(Some(name)) if add(&mut data, name) => {
                unknown.push(name.clone());
            }
            // Anything else fails at alert time too (and falls back): not ours to judge here.
            _ => break,
        }
    }
    Ok(unknown)
}

/// Sets `path` (`a.b.c`) in `data` to an empty string; `false` when it cannot be set.
fn add(data: &mut Value, path: &str) -> bool {
    let mut at = data;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(object) = at.as_object_mut() else {
            return false;
        };
        if parts.peek().is_none() {
            object.insert(part.to_owned(), Value::String(String::new()));
            return true;
        }
        at = object
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_variables_are_found_and_known_ones_are_not() {
        let names = unknown_variables(
            "{{appName}} failed: {{errorMesage}} at {{executionStartTime.startTimeLocal1}} / {{executionStartTime.startTimeLokal1}} {{{scriptLogTail}}} {{appNmae}}",
        )
        .unwrap();
        assert_eq!(
            names,
            [
                "errorMesage",
                "executionStartTime.startTimeLokal1",
                "appNmae"
            ]
        );
        assert!(
            unknown_variables("{{#if appOwnerEmail}}{{appOwnerEmail}}{{/if}}")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_template_that_does_not_compile_says_why() {
        let e = unknown_variables("{{#if appName}} never closed").unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn the_built_in_templates_use_only_known_variables() {
        for (name, template) in crate::notify::channel::BUILT_IN {
            assert_eq!(
                unknown_variables(template).unwrap(),
                Vec::<String>::new(),
                "{name}"
            );
        }
    }
}
