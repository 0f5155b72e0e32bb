//! Alerts about the safety net itself, not about a reload: the webhook watchdog's findings,
//! Qlik refusing the API key, reconciliation that cannot run.
//!
//! Why: they go to the tenant's channels like reload alerts, but have none of a reload's data.
//! Rendered with the reload templates they gave Teams an `Action.OpenUrl` with an empty URL
//! (Teams may reject the whole card, so the operator alert was lost), "Peak memory 0 bytes" and
//! an empty owner, and Slack an empty link.
//!
//! Rendered by each channel (`notify::channel`). Promises: each channel has a built-in template of its own for them (a user's reload template
//! is not used: its variables would be empty); every field they show is filled (tested for each
//! channel); the link goes to the tenant's Management Console; values are escaped as in reload
//! alerts (JSON strings, Slack and Teams markup, HTML, the terminal).

use serde::Serialize;

/// The `kind` of the JSON document webhook, MQTT and file channels receive.
pub const KIND: &str = "qlik-listener-operator-alert";

/// One operator alert (all fields filled by [`OperatorAlert::new`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAlert {
    /// Its id in the journal (one delivery per channel).
    pub alert_id: String,
    pub title: String,
    /// What happened, in a sentence or two.
    pub what: String,
    /// What the operator should do.
    pub action: String,
    /// A problem (`true`) or its end.
    pub problem: bool,
    /// The tenant as people know it: its comment and id.
    pub tenant: String,
    pub tenant_id: String,
    /// What it is about: the webhook's name, the API key's setting.
    pub subject: String,
    pub link: String,
    pub link_text: String,
    /// When it was seen, UTC (`YYYY-MM-DD HH:MM:SS`).
    pub time: String,
}

/// Where an operator alert sends people: the tenant's Management Console, at the page that
/// matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Webhooks,
    ApiKeys,
}

/// What an operator alert says; [`OperatorAlert::new`] adds the tenant, the link and the time.
pub struct Notice {
    pub alert_id: String,
    pub problem: bool,
    pub title: &'static str,
    pub what: String,
    pub action: String,
    pub subject: String,
    pub page: Page,
}

impl OperatorAlert {
    pub fn new(
        notice: Notice,
        tenant: &crate::config::TenantConfig,
        tenant_id: &str,
    ) -> OperatorAlert {
        let Notice {
            alert_id,
            problem,
            title,
            what,
            action,
            subject,
            page,
        } = notice;
        let base = tenant.tenant_url.as_str().trim_end_matches('/');
        let (link, link_text) = match page {
            Page::Webhooks => (
                format!("{base}/console/webhooks"),
                "Webhooks in the Management Console",
            ),
            Page::ApiKeys => (
                format!("{base}/console/api-keys"),
                "API keys in the Management Console",
            ),
        };
        let time = time::OffsetDateTime::now_utc();
        let time = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            time.year(),
            u8::from(time.month()),
            time.day(),
            time.hour(),
            time.minute(),
            time.second()
        );
        OperatorAlert {
            alert_id,
            title: title.to_owned(),
            what,
            action,
            problem,
            tenant: match tenant.comment.as_deref().filter(|c| !c.is_empty()) {
                Some(c) => format!("{c} ({tenant_id})"),
                None => tenant_id.to_owned(),
            },
            tenant_id: tenant_id.to_owned(),
            subject,
            link,
            link_text: link_text.to_owned(),
            time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelConfig, Target};
    use crate::notify::render::RenderError;
    use serde_json::Value;

    fn render(
        channel: &ChannelConfig,
        alert: &OperatorAlert,
    ) -> Result<(Option<String>, String), RenderError> {
        crate::notify::channel::render_operator(channel, alert).map(|p| (p.subject, p.body))
    }
    use crate::config::{EmailSettings, Priority};

    fn alert(hostile: bool) -> OperatorAlert {
        let tenant = crate::config::TenantConfig::for_tests("https://acme.eu.qlikcloud.com/");
        let what = if hostile {
            "<!channel> \"quoted\" [click](https://evil) </td><script>\u{1b}[2J".to_owned()
        } else {
            "Qlik disabled the webhook relay".to_owned()
        };
        let notice = Notice {
            alert_id: "op-1".into(),
            problem: true,
            title: "Qlik Cloud webhook needs attention",
            what,
            action: "Run qlik-listener webhook enable, then webhook resend.".into(),
            subject: "webhook relay".into(),
            page: Page::Webhooks,
        };
        OperatorAlert::new(notice, &tenant, "T1")
    }

    fn channels() -> Vec<ChannelConfig> {
        let email = EmailSettings {
            from: "q@example.com".into(),
            recipients: vec!["ops@example.com".into()],
            subject: "{{appName}}".into(),
            body_template: None,
            priority: Priority::High,
            owner_alert: None,
        };
        vec![
            ChannelConfig::new(
                "teams",
                Target::Teams {
                    url: url::Url::parse("https://t.example/").unwrap(),
                },
            ),
            ChannelConfig::new(
                "slack",
                Target::Slack {
                    url: url::Url::parse("https://s.example/").unwrap(),
                    channel: Some("#ops".into()),
                    from_user: None,
                    icon_emoji: None,
                },
            ),
            ChannelConfig::new("email", Target::Email(email)),
            ChannelConfig::new("console", Target::Console),
            ChannelConfig::new(
                "webhook",
                Target::Webhook {
                    url: url::Url::parse("https://w.example/").unwrap(),
                    secret: None,
                },
            ),
        ]
    }

    /// Every string a JSON body holds, however deep.
    fn strings(v: &Value, out: &mut Vec<(String, String)>, at: &str) {
        match v {
            Value::String(s) => out.push((at.to_owned(), s.clone())),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| strings(v, out, &format!("{at}[{i}]"))),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, v)| strings(v, out, &format!("{at}.{k}"))),
            _ => {}
        }
    }

    #[test]
    fn each_channel_renders_its_own_template_with_every_field_filled() {
        for channel in channels() {
            let (subject, body) = render(&channel, &alert(false)).unwrap();
            let id = &channel.id;
            assert!(
                body.contains("Qlik disabled the webhook relay"),
                "{id}: {body}"
            );
            assert!(
                body.contains("https://acme.eu.qlikcloud.com/console/webhooks"),
                "{id}: {body}"
            );
            assert!(body.contains("Test tenant (T1)"), "{id}: {body}");
            assert!(
                !body.contains("Peak memory") && !body.contains("bytes"),
                "{id}: {body}"
            );
            match channel.target {
                Target::Teams { .. } | Target::Slack { .. } | Target::Webhook { .. } => {
                    let json: Value = serde_json::from_str(&body).unwrap();
                    let mut all = Vec::new();
                    strings(&json, &mut all, "");
                    let empty: Vec<_> = all.iter().filter(|(_, s)| s.trim().is_empty()).collect();
                    assert!(empty.is_empty(), "{id}: empty fields {empty:?}");
                    if let Target::Teams { .. } = channel.target {
                        let action = &json["attachments"][0]["content"]["actions"][0];
                        assert_eq!(action["type"], "Action.OpenUrl");
                        assert_eq!(
                            action["url"],
                            "https://acme.eu.qlikcloud.com/console/webhooks"
                        );
                    }
                    if let Target::Slack { .. } = channel.target {
                        assert_eq!(json["channel"], "#ops");
                        assert!(body.contains("<https://acme.eu.qlikcloud.com/console/webhooks|Webhooks in the Management Console>"), "{body}");
                    }
                    if let Target::Webhook { .. } = channel.target {
                        assert_eq!(json["kind"], KIND);
                    }
                }
                Target::Email(_) => {
                    assert_eq!(
                        subject.as_deref(),
                        Some("Qlik Cloud webhook needs attention (T1)")
                    );
                    for field in ["<td></td>", "<p></p>", "href=\"\""] {
                        assert!(!body.contains(field), "{id}: {field} in {body}");
                    }
                }
                _ => {
                    for line in body.lines() {
                        assert!(!line.trim_end().ends_with(':'), "{id}: empty line {line:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn values_stay_inert_on_every_channel() {
        for channel in channels() {
            let (_, body) = render(&channel, &alert(true)).unwrap();
            let id = &channel.id;
            if !matches!(channel.target, Target::Email(_)) {
                assert!(
                    !body.contains('\u{1b}'),
                    "{id}: escape sequence reached the body"
                );
            }
            match channel.target {
                Target::Slack { .. } => assert!(body.contains("&lt;!channel&gt;"), "{body}"),
                Target::Teams { .. } => assert!(
                    body.contains("]\u{200B}(") || body.contains("]\\u200b("),
                    "{body}"
                ),
                Target::Email(_) => assert!(body.contains("&lt;script&gt;"), "{body}"),
                _ => {}
            }
        }
    }
}
