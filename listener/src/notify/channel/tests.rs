use super::*;
use crate::config::{ChannelKind, Format, Target};
use crate::notify::render::*;
use crate::script_log::TRUNCATED;
use serde_json::json;

/// A channel's rendered reload alert, its JSON parsed (the console's text as a JSON string).
struct Rendered {
    body: Value,
    fallback: Option<String>,
}

fn render(channel: &ChannelConfig, data: &Value) -> Result<Rendered, RenderError> {
    let (payload, fallback) = render_reload(channel, data)?;
    let body = serde_json::from_str(&payload.body).unwrap_or(Value::String(payload.body));
    Ok(Rendered { body, fallback })
}

fn render_console(
    channel: &ChannelConfig,
    data: &Value,
) -> Result<(String, Option<String>), RenderError> {
    let (payload, fallback) = render_reload(channel, data)?;
    Ok((payload.body, fallback))
}

fn channel(kind: ChannelKind) -> ChannelConfig {
    let url = url::Url::parse("http://127.0.0.1/x").unwrap();
    let target = match kind {
        ChannelKind::Teams => Target::Teams { url },
        ChannelKind::Slack => Target::Slack {
            url,
            channel: None,
            from_user: None,
            icon_emoji: None,
        },
        ChannelKind::Console => Target::Console,
        ChannelKind::Webhook => Target::Webhook { url, secret: None },
        ChannelKind::Mqtt => Target::Mqtt {
            topic: "alerts".into(),
        },
        other => panic!("not used here: {other:?}"),
    };
    let mut c = ChannelConfig::new("c", target);
    c.message.head_lines = 2;
    c.message.tail_lines = 2;
    c
}

fn basic(kind: ChannelKind, template: &str) -> ChannelConfig {
    let mut c = channel(kind);
    c.message.format = Format::Basic(template.into());
    c
}

fn with_template(kind: ChannelKind, file: &std::path::Path) -> ChannelConfig {
    let mut c = channel(kind);
    c.message.format = Format::Formatted {
        template_file: Some(file.to_owned()),
    };
    c
}

fn alert(v: Value) -> AlertData {
    serde_json::from_value(v).unwrap()
}

/// Alert data full of what breaks naive JSON templates.
fn hostile() -> Value {
    let nasty = "quote \" backslash \\ backtick ` newline\n tab\t cr\r nul\u{0} bell\u{7} emoji 🚨 </script>";
    json!({
        "appName": nasty, "appId": "a1", "appDescription": nasty, "appUrl": "https://t/sense/app/a1",
        "appOwnerName": nasty, "appOwnerEmail": "o@example.com", "tenantId": "T", "tenantComment": nasty,
        "eventId": "e1", "executionStartTime": {"startTimeLocal1": "2026-11-20 06:14:04"},
        "executionStopTime": {"stopTimeLocal1": "2026-11-20 06:14:52"},
        "executionDuration": {"hours": 0, "minutes": 0, "seconds": 48},
        "reloadTrigger": "chronos", "reloadId": "r1", "errorCode": nasty, "errorMessage": nasty,
        "executionStatusText": "error", "peakMemoryBytes": 1, "qlikSenseHub": "https://t/hub", "qlikSenseQMC": "",
        "scriptLogHead": format!("h1 {nasty}\nh2\nh3"), "scriptLogTail": format!("t1\nt2\nt3 {nasty}"),
        "genericUrls": [{"id": "x", "linkText": nasty, "url": "https://wiki/\"x"}]
    })
}

#[test]
fn built_in_templates_give_valid_json_whatever_the_data() {
    for kind in [ChannelKind::Teams, ChannelKind::Slack] {
        let ch = channel(kind);
        let data = channel_data(&ch, &alert(hostile()));
        let r = render(&ch, &data).unwrap();
        assert!(r.fallback.is_none());
        let text = r.body.to_string();
        assert!(
            text.contains("quote \\\" backslash \\\\ backtick ` newline\\n"),
            "{kind:?}: {text}"
        );
        assert!(text.contains("🚨"));
        assert!(text.contains("t3 quote"), "tail kept");
        assert!(!text.contains("t1"), "only the last 2 tail lines");
        assert!(
            text.contains("h1 quote") && !text.contains("h3"),
            "only the first 2 head lines"
        );
    }
}

/// Markup in values, as a hostile app name or error message would carry it.
const INJECTION: &str =
        "<!channel> <@U024BE7LH> see <https://evil.example|click here> or [click](https://evil.example) & <b>";

#[test]
fn values_cannot_write_slack_or_teams_markup_but_templates_keep_theirs() {
    let mut data = hostile();
    for key in ["appName", "errorMessage", "scriptLogTail", "tenantComment"] {
        data[key] = json!(INJECTION);
    }
    data["genericUrls"] =
        json!([{"id": "w", "linkText": "Runbook", "url": "https://wiki/run?a=1&b=2"}]);

    let slack = channel(ChannelKind::Slack);
    let body = render(&slack, &channel_data(&slack, &alert(data.clone())))
        .unwrap()
        .body;
    let text = body.to_string();
    for raw in [
        "<!channel>",
        "<@U024BE7LH>",
        "<https://evil.example|",
        "<b>",
        " & ",
    ] {
        assert!(!text.contains(raw), "Slack got {raw:?}: {text}");
    }
    assert!(text.contains(
        "&lt;!channel&gt; &lt;@U024BE7LH&gt; see &lt;https://evil.example|click here&gt;"
    ));
    assert!(text.contains(" &amp; &lt;b&gt;"));
    // The template's own links still work; a URL's & is escaped as Slack asks.
    assert!(
        text.contains("<https://t/sense/app/a1|&lt;!channel&gt;"),
        "{text}"
    );
    assert!(
        text.contains("<https://wiki/run?a=1&amp;b=2|Runbook>"),
        "{text}"
    );
    let text = render(&basic(ChannelKind::Slack, "Failed: {{appName}}"), &data)
        .unwrap()
        .body["text"]
        .to_string();
    assert!(
        !text.contains("<!channel>") && text.contains("&lt;!channel&gt;"),
        "{text}"
    );

    let teams = channel(ChannelKind::Teams);
    let body = render(&teams, &channel_data(&teams, &alert(data.clone())))
        .unwrap()
        .body;
    let text = body.to_string();
    assert!(!text.contains("[click](https://evil.example)"), "{text}");
    assert!(
        text.contains("[click]\u{200B}(https://evil.example)"),
        "{text}"
    );
    assert!(
        text.contains("[Runbook](https://wiki/run?a=1&b=2)"),
        "the template's link: {text}"
    );
    assert_eq!(
        body["attachments"][0]["content"]["actions"][0]["url"],
        "https://t/sense/app/a1"
    );
    let text = render(&basic(ChannelKind::Teams, "Failed: {{appName}}"), &data)
        .unwrap()
        .body
        .to_string();
    assert!(!text.contains("[click](https://evil.example)"), "{text}");
}

#[test]
fn user_templates_render_and_broken_ones_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.handlebars");
    std::fs::write(
        &good,
        r#"{"text": "{{appName}} failed: {{errorMessage}} ({{executionDuration.seconds}}s)"}"#,
    )
    .unwrap();
    let ch = with_template(ChannelKind::Slack, &good);
    let r = render(&ch, &hostile()).unwrap();
    assert!(r.fallback.is_none());
    assert!(r.body["text"].as_str().unwrap().ends_with("(48s)"));

    // Triple braces, as Butler's templates write script-log fields: escaped all the same,
    // so the text is the value's and the JSON stays valid.
    let butler_style = dir.path().join("butler-style.handlebars");
    std::fs::write(
            &butler_style,
            r#"{"text": "{{{errorMessage}}}", "log": "{{{scriptLogTail}}}", "{{{{raw}}}}x{{{{/raw}}}}": 1}"#,
        )
        .unwrap();
    let ch = with_template(ChannelKind::Slack, &butler_style);
    let r = render(&ch, &hostile()).unwrap();
    assert!(r.fallback.is_none(), "{:?}", r.fallback);
    assert!(r.body["text"]
        .as_str()
        .unwrap()
        .starts_with("quote \" backslash \\"));
    assert!(r.body["log"].as_str().unwrap().contains("t3 quote"));

    // A template that is not JSON: the built-in is used, and the reason is given.
    let broken = dir.path().join("broken.handlebars");
    std::fs::write(&broken, r#"{"text": "{{errorMessage}}""#).unwrap();
    let ch = with_template(ChannelKind::Slack, &broken);
    let r = render(&ch, &hostile()).unwrap();
    assert!(r.fallback.unwrap().contains("did not produce valid JSON"));
    assert_eq!(r.body["blocks"][0]["type"], "header");

    let syntax = dir.path().join("syntax.handlebars");
    std::fs::write(&syntax, r#"{"text": "{{#if appName}}"}"#).unwrap();
    let ch = with_template(ChannelKind::Slack, &syntax);
    assert!(render(&ch, &hostile())
        .unwrap()
        .fallback
        .unwrap()
        .contains("template error"));
}

#[test]
fn people_see_grouped_numbers_machines_see_numbers() {
    assert_eq!(grouped(0), "0");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(1000), "1,000");
    assert_eq!(grouped(187_236_352), "187,236,352");
    let data = AlertData {
        peak_memory_bytes: 187_236_352,
        app_file_size: 1_048_576,
        ..AlertData::default()
    };
    for kind in [ChannelKind::Teams, ChannelKind::Slack, ChannelKind::Console] {
        let d = channel_data(&channel(kind), &data);
        assert_eq!(d["peakMemoryBytes"], "187,236,352", "{kind:?}");
        assert_eq!(d["appFileSize"], "1,048,576", "{kind:?}");
        assert_eq!(d["rowLimit"], "0", "{kind:?}");
    }
    for kind in [ChannelKind::Webhook, ChannelKind::Mqtt] {
        let d = channel_data(&channel(kind), &data);
        assert_eq!(d["peakMemoryBytes"], 187_236_352, "{kind:?}");
    }
}

#[test]
fn basic_messages_and_slack_options() {
    let mut ch = basic(
        ChannelKind::Slack,
        "Reload of {{appName}} failed: {{errorMessage}}",
    );
    ch.target = Target::Slack {
        url: url::Url::parse("http://127.0.0.1/x").unwrap(),
        channel: Some("#qlik-alerts".into()),
        from_user: Some("Qlik Cloud".into()),
        icon_emoji: Some(":ghost:".into()),
    };
    let r = render(
        &ch,
        &json!({"appName": "Sales \"EU\"", "errorMessage": "x"}),
    )
    .unwrap();
    assert_eq!(r.body["text"], "Reload of Sales \"EU\" failed: x");
    assert_eq!(r.body["channel"], "#qlik-alerts");
    assert_eq!(r.body["username"], "Qlik Cloud");
    assert_eq!(r.body["icon_emoji"], ":ghost:");

    let ch = basic(ChannelKind::Teams, "{{appName}} failed");
    let r = render(&ch, &json!({"appName": "A\nB"})).unwrap();
    assert_eq!(
        r.body["attachments"][0]["content"]["body"][0]["text"],
        "A\nB failed"
    );
}

#[test]
fn emails_escape_html_and_keep_the_subject_on_one_line() {
    let settings = crate::config::EmailSettings {
        from: "qlik@example.com".into(),
        recipients: vec![],
        subject: "Reload failed: {{appName}}".into(),
        body_template: None,
        priority: crate::config::Priority::High,
        owner_alert: None,
    };
    let email = ChannelConfig::new("email", Target::Email(settings));
    let (r, _) = render_reload(&email, &hostile()).unwrap();
    let subject = r.subject.unwrap();
    assert!(!subject.contains('\n') && subject.starts_with("Reload failed: quote \""));
    assert!(r.body.contains("&lt;/script&gt;") && !r.body.contains("</script>"));
    assert!(r.body.contains("h1 quote &quot;"));
}

#[test]
fn basic_content_only_and_size_limits() {
    let mut ch = channel(ChannelKind::Teams);
    ch.message.basic_content_only = true;
    let d = channel_data(&ch, &alert(hostile()));
    assert_eq!(d["scriptLogHead"], "");
    assert_eq!(d["scriptLogTailCount"], 0);

    let mut ch = channel(ChannelKind::Slack);
    ch.message.tail_lines = 1000;
    let long_tail = (0..1000)
        .map(|i| format!("line {i} {}", "x".repeat(50)))
        .collect::<Vec<_>>()
        .join("\n");
    let d = channel_data(
        &ch,
        &alert(json!({"scriptLogHead": "", "scriptLogTail": long_tail})),
    );
    let tail = d["scriptLogTail"].as_str().unwrap();
    assert!(tail.chars().count() <= 2_500);
    assert!(tail.starts_with(TRUNCATED) && tail.ends_with(&format!("line 999 {}", "x".repeat(50))));
    let r = render(&ch, &d).unwrap();
    let section = r.body["blocks"][4]["text"]["text"].as_str().unwrap();
    assert!(
        section.chars().count() <= 3000,
        "within Slack's section limit"
    );
}

#[test]
fn console_text_cannot_drive_the_terminal() {
    let mut data = hostile();
    data["appName"] = json!("evil \u{1b}[2J\u{1b}]0;pwned\u{7} app");
    let ch = channel(ChannelKind::Console);
    let (text, fallback) = render_console(&ch, &channel_data(&ch, &alert(data.clone()))).unwrap();
    assert!(fallback.is_none());
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\0'));
    assert!(text.contains("evil \\u{1b}[2J"), "{text}");
    assert!(text.contains("ALERT: Qlik Cloud reload failed"));
    // As a Rendered body it is the same text, as a JSON string.
    assert_eq!(
        render(&ch, &channel_data(&ch, &alert(data.clone())))
            .unwrap()
            .body,
        json!(text)
    );

    let (text, _) =
        render_console(&basic(ChannelKind::Console, "failed: {{appName}}"), &data).unwrap();
    assert_eq!(text, "failed: evil \\u{1b}[2J\\u{1b}]0;pwned\\u{7} app");
}
