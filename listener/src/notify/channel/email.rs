//! E-mail over SMTP (`Butler.emailNotification.smtp`): one message per recipient.
//!
//! Promises: the subject is one line (a text template); values are HTML-escaped in the body;
//! the certificate is verified unless `tls.rejectUnauthorized` is false (logged as a warning);
//! a permanent SMTP refusal (5xx) fails at once, anything else is tried again.

use super::{Payload, Traits};
use crate::config::{EmailSettings, Priority, SmtpConfig, SmtpSecurity};
use crate::notify::operator::OperatorAlert;
use crate::notify::render::{self, Markup, RenderError};
use crate::notify::AttemptError;
use handlebars::Handlebars;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::Value;
use std::time::Duration;

pub const TEMPLATE: &str = include_str!("../../../templates/email-reload-failed.handlebars");
pub const OPERATOR_TEMPLATE: &str = include_str!("../../../templates/email-operator.handlebars");

pub const TRAITS: Traits = Traits {
    script_log_limit: crate::script_log::SCRIPT_LOG_FIELD_MAX,
    for_people: true,
    markup: Markup::Plain,
    line_break: "\n",
};

/// The subject (`subject`, a text template) and the HTML body, from the user's `bodyFileName`
/// or the built-in template.
pub fn render(
    settings: &EmailSettings,
    data: &Value,
) -> Result<(Payload, Option<String>), RenderError> {
    let mut text = Handlebars::new();
    text.register_escape_fn(handlebars::no_escape);
    let subject = text
        .render_template(&settings.subject, data)
        .map_err(|e| RenderError::new(format!("subject: {e}")))?;
    let html = Handlebars::new();
    let (html, fallback) =
        render::user_or_builtin(settings.body_template.as_deref(), TEMPLATE, |t| {
            html.render_template(t, data).map_err(|e| e.to_string())
        })?;
    let payload = Payload {
        subject: Some(render::one_line(&subject)),
        body: html,
    };
    Ok((payload, fallback))
}

pub fn render_operator(alert: &OperatorAlert, data: &Value) -> Result<Payload, String> {
    let html = Handlebars::new()
        .render_template(OPERATOR_TEMPLATE, data)
        .map_err(|e| e.to_string())?;
    let subject = format!("{} ({})", alert.title, alert.tenant_id);
    Ok(Payload {
        subject: Some(render::one_line(&subject)),
        body: html,
    })
}

pub type Smtp = AsyncSmtpTransport<Tokio1Executor>;

/// The SMTP client for `Butler.emailNotification.smtp`.
pub fn transport(c: &SmtpConfig) -> anyhow::Result<Smtp> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    if c.accept_invalid_certs {
        tracing::warn!("Butler.emailNotification.smtp.tls.rejectUnauthorized is false: the SMTP server's certificate is NOT verified");
    }
    let name = c.server_name.clone().unwrap_or_else(|| c.host.clone());
    let params = || {
        TlsParameters::builder(name.clone())
            .dangerous_accept_invalid_certs(c.accept_invalid_certs)
            .build_rustls()
    };
    let tls = match c.security {
        SmtpSecurity::Implicit => Tls::Wrapper(params()?),
        SmtpSecurity::StartTls => Tls::Required(params()?),
        SmtpSecurity::Opportunistic => Tls::Opportunistic(params()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = Smtp::builder_dangerous(&c.host)
        .port(c.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(20)));
    if let Some((user, password)) = &c.credentials {
        let password = String::from_utf8_lossy(password.expose()).into_owned();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// Sends one e-mail: `subject` and the HTML `body` to `to`.
pub async fn send(
    smtp: Option<&Smtp>,
    settings: &EmailSettings,
    to: Option<&str>,
    subject: &str,
    body: &str,
) -> Result<(), AttemptError> {
    use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
    use lettre::message::{Mailbox, SinglePart};
    let (Some(smtp), Some(to)) = (smtp, to) else {
        return Err(AttemptError::Permanent("no SMTP server configured".into()));
    };
    let from: Mailbox = crate::config::mailbox(&settings.from)
        .ok_or_else(|| AttemptError::Permanent("fromAddress: not an e-mail address".into()))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| AttemptError::Permanent(format!("recipient: {e}")))?;
    let (x_priority, importance) = match settings.priority {
        Priority::High => ("1 (Highest)", "High"),
        Priority::Normal => ("3 (Normal)", "Normal"),
        Priority::Low => ("5 (Lowest)", "Low"),
    };
    let message = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Priority"),
            x_priority.into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Importance"),
            importance.into(),
        ))
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .header(ContentTransferEncoding::Base64)
                .body(body.to_owned()),
        )
        .map_err(|e| AttemptError::Permanent(format!("cannot build the e-mail: {e}")))?;
    match smtp.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(AttemptError::Permanent(format!("SMTP: {e}"))),
        Err(e) => Err(AttemptError::Retry(format!("SMTP: {e}"))),
    }
}
