//! E-mail alerts: the channel's section (`alert.emailNotification.reloadAppFailure`) and the
//! SMTP server (`Butler.emailNotification.smtp`).

use super::value::{ByTag, Check, Flag, KeyPath, Text, Whole};
use qlik_events::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// Who gets the e-mail alert and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub from: String,
    pub recipients: Vec<String>,
    /// A template (text), like Butler's `subject`.
    pub subject: String,
    /// `bodyFileDirectory` + `htmlTemplateFile`.
    pub body_template: Option<PathBuf>,
    pub priority: Priority,
    /// `appOwnerAlert`, when enabled.
    pub owner_alert: Option<OwnerAlert>,
}

/// An e-mail's priority (`X-Priority` and `Importance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// Whether the app owner is alerted too (`appOwnerAlert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerAlert {
    pub include_all: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `secure: true`: TLS from the first byte (usually port 465).
    Implicit,
    /// `tls.requireTLS: true`: STARTTLS, refused if the server does not offer it.
    StartTls,
    /// The default: STARTTLS when offered.
    Opportunistic,
    /// `tls.ignoreTLS: true`: plain text (a local relay only).
    None,
}

/// `Butler.emailNotification.smtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// `tls.serverName`: the name to verify the certificate against (default: host).
    pub server_name: Option<String>,
    /// `tls.rejectUnauthorized: false`: accept any certificate (logged as a warning).
    pub accept_invalid_certs: bool,
    pub credentials: Option<(String, Secret)>,
}

/// `alert.emailNotification.reloadAppFailure`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct EmailSection {
    /// Send e-mail alerts (default false; the server is `Butler.emailNotification.smtp`).
    pub enable: Option<Flag>,
    /// `Name <address>` or an address.
    from_address: Option<Text>,
    /// Who gets each alert (e-mail addresses).
    recipients: Option<Vec<Text>>,
    /// A handlebars template (default `{{alertTitle}}: {{appName}}`, i.e. `Qlik Cloud reload failed: <app>`).
    subject: Option<Text>,
    /// With htmlTemplateFile: the body template, relative to this file's folder.
    body_file_directory: Option<Text>,
    /// The HTML template's file name in `bodyFileDirectory` (`.handlebars` added when missing); default: the built-in template.
    html_template_file: Option<Text>,
    /// high (default), normal or low.
    priority: Option<Text>,
    /// Also e-mail the app's owner, as Qlik Cloud knows them.
    app_owner_alert: Option<AppOwnerAlert>,
    /// Alert only apps with a tag.
    pub alert_enable_by_tag: Option<ByTag>,
    /// Seconds between two alerts for the same app and recipient (default 300, as Butler).
    pub rate_limit: Option<Whole>,
    /// Script-log lines from the start (default 15).
    pub head_script_log_lines: Option<Whole>,
    /// Script-log lines from the end (default 15).
    pub tail_script_log_lines: Option<Whole>,
}

/// Also alert the app's owner.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct AppOwnerAlert {
    /// E-mail the app owner too (default false).
    enable: Option<Flag>,
    /// Only these owners (by e-mail); with `includeAll`, every owner.
    include_owner: Option<OwnerList>,
    /// Never these owners (by e-mail).
    exclude_owner: Option<OwnerList>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct OwnerList {
    /// Every owner (default true); otherwise only those listed under `user`.
    include_all: Option<Flag>,
    /// The owners, each by `email`.
    user: Option<Vec<OwnerUser>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct OwnerUser {
    /// The owner's e-mail address.
    email: Option<Text>,
}

/// `Butler.emailNotification`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
pub struct EmailNotification {
    /// Butler's master switch for e-mail: false turns e-mail alerts off here too.
    pub enable: Option<Flag>,
    /// The SMTP server.
    pub smtp: Option<Smtp>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Smtp {
    /// The SMTP server's host name.
    host: Option<Text>,
    /// Default 465 with `secure`, else 587.
    port: Option<Whole>,
    /// TLS from the first byte (port 465).
    secure: Option<Flag>,
    /// TLS settings: `serverName`, `ignoreTLS`, `requireTLS`, `rejectUnauthorized`.
    tls: Option<SmtpTls>,
    /// Log in to the server: `enable`, `user`, `password`.
    auth: Option<SmtpAuth>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct SmtpTls {
    /// The name to verify the certificate against (default: host).
    server_name: Option<Text>,
    /// Refuse a server without STARTTLS.
    #[serde(rename = "requireTLS")]
    require_tls: Option<Flag>,
    /// Plain text (a local relay only).
    #[serde(rename = "ignoreTLS")]
    ignore_tls: Option<Flag>,
    /// false: accept any certificate (logged as a warning).
    reject_unauthorized: Option<Flag>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct SmtpAuth {
    /// Log in to the SMTP server (default false).
    enable: Option<Flag>,
    /// The user name to log in with.
    user: Option<Text>,
    /// A literal or `${ENV_VAR}`.
    password: Option<Text>,
}

pub fn check_email(c: &mut Check<'_>, at: &KeyPath, s: EmailSection) -> Option<EmailSettings> {
    let from_at = at.key("fromAddress");
    let from = c.required(&s.from_address, &from_at);
    if let Some(f) = &from {
        if mailbox(f).is_none() {
            c.error(&from_at, format!("'{f}' is not an e-mail address"));
        }
    }
    let recipients: Vec<String> = s
        .recipients
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| address(c, Some(r), &at.key("recipients").item(i)))
        .collect();
    let owner = s.app_owner_alert.unwrap_or_default();
    let owner_alert = Flag::or(owner.enable, false).then(|| {
        let owners = |c: &mut Check<'_>, list: Option<OwnerList>, key: &str| {
            let at = at.key("appOwnerAlert").key(key);
            let list = list.unwrap_or_default();
            let users = list.user.unwrap_or_default().into_iter().enumerate();
            let listed = users
                .filter_map(|(i, u)| address(c, u.email, &at.key("user").item(i).key("email")))
                .collect();
            (Flag::or(list.include_all, true), listed)
        };
        let (include_all, include) = owners(c, owner.include_owner, "includeOwner");
        let (_, exclude) = owners(c, owner.exclude_owner, "excludeOwner");
        OwnerAlert {
            include_all,
            include,
            exclude,
        }
    });
    if recipients.is_empty() && owner_alert.is_none() {
        c.error(
            &at.key("recipients"),
            "missing: no recipients and appOwnerAlert is off",
        );
    }
    let body_template = match (
        Text::of(&s.body_file_directory),
        Text::of(&s.html_template_file),
    ) {
        (Some(dir), Some(file)) => {
            let name = if file.ends_with(".handlebars") {
                file.to_owned()
            } else {
                format!("{file}.handlebars")
            };
            let p = c.base.join(dir).join(name);
            if p.is_file() {
                Some(p)
            } else {
                let reason = format!("no such file: {}", p.display());
                c.error(&at.key("htmlTemplateFile"), reason);
                None
            }
        }
        _ => None,
    };
    let priority = match Text::of(&s.priority)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("high") => Priority::High,
        Some("normal") => Priority::Normal,
        Some("low") => Priority::Low,
        Some(other) => {
            let reason = format!("'{other}' is not high, normal or low");
            c.error(&at.key("priority"), reason);
            Priority::High
        }
    };
    Some(EmailSettings {
        from: from?,
        recipients,
        subject: Text::of(&s.subject)
            .unwrap_or("{{alertTitle}}: {{appName}}")
            .to_owned(),
        body_template,
        priority,
        owner_alert,
    })
}

/// An e-mail address, checked.
fn address(c: &mut Check<'_>, v: Option<Text>, at: &KeyPath) -> Option<String> {
    let address = c.required(&v, at)?;
    if address.parse::<lettre::Address>().is_ok() {
        Some(address)
    } else {
        c.error(at, format!("'{address}' is not an e-mail address"));
        None
    }
}

pub fn check_smtp(c: &mut Check<'_>, at: &KeyPath, s: Smtp) -> Option<SmtpConfig> {
    let host = c.required(&s.host, &at.key("host"));
    let secure = Flag::or(s.secure, false);
    let port = c.whole(
        s.port,
        &at.key("port"),
        1..=65535,
        if secure { 465 } else { 587 },
    ) as u16;
    let tls = s.tls.unwrap_or_default();
    let require = Flag::or(tls.require_tls, false);
    let ignore = Flag::or(tls.ignore_tls, false);
    let security = match (secure, require, ignore) {
        (true, _, _) => SmtpSecurity::Implicit,
        (false, true, true) => {
            c.error(
                &at.key("tls"),
                "requireTLS and ignoreTLS contradict each other",
            );
            SmtpSecurity::StartTls
        }
        (false, true, false) => SmtpSecurity::StartTls,
        (false, false, true) => SmtpSecurity::None,
        (false, false, false) => SmtpSecurity::Opportunistic,
    };
    let auth = s.auth.unwrap_or_default();
    let credentials = if Flag::or(auth.enable, false) {
        let user = c.required(&auth.user, &at.key("auth.user"));
        let password_at = at.key("auth.password");
        if auth.password.is_none() {
            c.error(&password_at, "missing: auth.enable is true");
        }
        let password = c.secret(&auth.password, &password_at);
        user.zip(password)
    } else {
        None
    };
    Some(SmtpConfig {
        host: host?,
        port,
        security,
        server_name: Text::of(&tls.server_name)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        accept_invalid_certs: !Flag::or(tls.reject_unauthorized, true),
        credentials,
    })
}

/// A sender or recipient as Butler's files write it: `address`, `Name <address>`, and also
/// `Qlik Sense (no-reply) <address>` (Butler's default `fromAddress`), whose parentheses an
/// RFC 5322 parser reads as a comment and refuses: the name is taken as written.
pub fn mailbox(text: &str) -> Option<lettre::message::Mailbox> {
    if let Ok(m) = text.parse::<lettre::message::Mailbox>() {
        return Some(m);
    }
    let (name, rest) = text.rsplit_once('<')?;
    let address = rest
        .strip_suffix('>')?
        .trim()
        .parse::<lettre::Address>()
        .ok()?;
    let name = name.trim().trim_matches('"').trim();
    Some(lettre::message::Mailbox::new(
        (!name.is_empty()).then(|| name.to_owned()),
        address,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn butlers_from_addresses_are_mailboxes() {
        for (text, name, address) in [
            (
                "Qlik Sense (no-reply) <qliksense-noreply@ptarmiganlabs.com>",
                Some("Qlik Sense (no-reply)"),
                "qliksense-noreply@ptarmiganlabs.com",
            ),
            ("Ops <ops@example.com>", Some("Ops"), "ops@example.com"),
            (
                "\"Qlik, Alerts\" <a@example.com>",
                Some("Qlik, Alerts"),
                "a@example.com",
            ),
            ("a@example.com", None, "a@example.com"),
        ] {
            let m = mailbox(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(m.name.as_deref(), name, "{text}");
            assert_eq!(m.email.to_string(), address, "{text}");
        }
        for bad in [
            "not an address",
            "Name <not-an-address>",
            "Name <a@example.com",
        ] {
            assert!(mailbox(bad).is_none(), "{bad}");
        }
    }
}
