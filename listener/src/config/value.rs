//! The leaf values of the file and the checks made on them.
//!
//! The file is read in two stages. First serde reads the YAML into the section types of this
//! folder, whose leaves are the three forgiving types below: [`Text`] takes a string or a
//! number (`port: "8883"`, `id: 42`), [`Whole`] a whole number or a string holding one, [`Flag`]
//! `true` or `false`. A value of the wrong shape stops this stage with its key path. Then
//! [`Check`] turns the sections into the typed [`Config`](super::Config), collecting every
//! problem with its key path instead of stopping at the first.
//!
//! No message repeats a value from the file: a misplaced secret must not end up in a log.

use qlik_events::Secret;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

/// Text: a YAML string, or a number written without quotes.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// A whole number, or a string holding one (`"8883"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    Number(u64),
    /// Negative, fractional or not a number: reported with the key's range.
    Invalid,
    /// A placeholder of Butler's template (`<MQTT broker port>`), left in.
    Placeholder,
}

/// `true` or `false`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl Flag {
    pub fn or(v: Option<Flag>, default: bool) -> bool {
        v.map_or(default, |f| f.0)
    }
}

impl Text {
    /// The trimmed text, if any.
    pub fn of(v: &Option<Text>) -> Option<&str> {
        v.as_ref().map(|t| t.0.trim())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                Ok(u64::try_from(v).map_or(Whole::Invalid, Whole::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Whole, E> {
                Ok(Whole::Invalid)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Whole, E> {
                if is_placeholder(v.trim()) {
                    return Ok(Whole::Placeholder);
                }
                Ok(v.trim().parse().map_or(Whole::Invalid, Whole::Number))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number"] })
    }
}

impl JsonSchema for Whole {
    fn schema_name() -> Cow<'static, str> {
        "Whole".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "string"], "pattern": "^\\s*[0-9]+\\s*$", "minimum": 0 })
    }
}

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "boolean" })
    }
}

const PLACEHOLDER: &str =
    "still holds a placeholder (<…>, as in Butler's template): fill in the value";

/// A template's placeholder (`<JWT token>`, `<password>`), left in by mistake.
fn is_placeholder(value: &str) -> bool {
    value.len() > 2 && value.starts_with('<') && value.ends_with('>') && !value[1..].contains('<')
}

/// Where a value is in the file: `Butler.qlikSenseCloud.event.mqtt.tenant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(String);

impl KeyPath {
    pub fn new(path: &str) -> KeyPath {
        KeyPath(path.to_owned())
    }
    /// The path of `key` (dotted for nested keys) below this one.
    pub fn key(&self, key: &str) -> KeyPath {
        KeyPath(format!("{}.{key}", self.0))
    }
    /// The path of item `i` of the list at this path.
    pub fn item(&self, i: usize) -> KeyPath {
        KeyPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The second stage: checks values and collects every problem with its key path.
pub struct Check<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The file's folder: relative paths in the file are relative to it.
    pub base: &'a Path,
    pub errors: Vec<super::ConfigError>,
    /// Key paths of secrets written in the file itself (not `${VAR}`).
    pub literal_secrets: Vec<String>,
    /// Key paths in the file that the listener does not read (to say where a misplaced block
    /// went).
    pub ignored: Vec<String>,
    /// What most likely does not do what was meant, key path first.
    pub warnings: Vec<String>,
}

impl<'a> Check<'a> {
    pub fn new(base: &'a Path, env: &'a dyn Fn(&str) -> Option<String>) -> Check<'a> {
        Check {
            env,
            base,
            errors: Vec::new(),
            literal_secrets: Vec::new(),
            ignored: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn error(&mut self, at: &KeyPath, reason: impl Into<String>) {
        self.errors.push(super::ConfigError {
            path: at.0.clone(),
            reason: reason.into(),
        });
    }

    /// Trimmed non-empty text; "missing" or "is empty" otherwise.
    pub fn required(&mut self, v: &Option<Text>, at: &KeyPath) -> Option<String> {
        match Text::of(v) {
            Some("") => {
                self.error(at, "is empty");
                None
            }
            Some(p) if is_placeholder(p) => {
                self.error(at, PLACEHOLDER);
                None
            }
            Some(s) => Some(s.to_owned()),
            None => {
                self.error(at, "missing");
                None
            }
        }
    }

    /// Trimmed text if given and not empty; a placeholder left in is an error.
    pub fn optional(&mut self, v: &Option<Text>, at: &KeyPath) -> Option<String> {
        match Text::of(v) {
            None | Some("") => None,
            Some(p) if is_placeholder(p) => {
                self.error(at, PLACEHOLDER);
                None
            }
            Some(t) => Some(t.to_owned()),
        }
    }

    /// A secret, literal or `${VAR}` resolved from the environment. Absent: `None`, no error.
    pub fn secret(&mut self, v: &Option<Text>, at: &KeyPath) -> Option<Secret> {
        let raw = Text::of(v)?;
        if let Some(var) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            return match (self.env)(var) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    self.error(at, format!("environment variable {var} is not set"));
                    None
                }
            };
        }
        if raw.is_empty() {
            self.error(at, "is empty");
            return None;
        }
        if is_placeholder(raw) {
            // The value is not repeated: it may be a secret after all.
            self.error(at, PLACEHOLDER);
            return None;
        }
        self.literal_secrets.push(at.0.clone());
        Some(Secret::new(raw))
    }

    /// A whole number in `range`, or `default` when absent.
    pub fn whole(
        &mut self,
        v: Option<Whole>,
        at: &KeyPath,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        match v {
            None => default,
            Some(Whole::Number(n)) if range.contains(&n) => n,
            Some(Whole::Placeholder) => {
                self.error(at, PLACEHOLDER);
                default
            }
            Some(_) => {
                let (from, to) = range.into_inner();
                self.error(at, format!("expected a whole number from {from} to {to}"));
                default
            }
        }
    }

    /// An existing file, relative to the config file's folder. Absent: `None`, no error.
    pub fn file(&mut self, v: &Option<Text>, at: &KeyPath) -> Option<PathBuf> {
        v.as_ref()?;
        let name = self.required(v, at)?;
        let p = self.base.join(name);
        if !p.is_file() {
            self.error(at, format!("no such file: {}", p.display()));
            return None;
        }
        Some(p)
    }

    /// An existing file that must be given.
    pub fn required_file(&mut self, v: &Option<Text>, at: &KeyPath) -> Option<PathBuf> {
        if v.is_none() {
            self.error(at, "missing");
        }
        self.file(v, at)
    }

    /// A topic filter to subscribe to (`qscloud/#`), `default` when absent.
    pub fn topic_filter(&mut self, v: &Option<Text>, at: &KeyPath, default: &str) -> String {
        let t = Text::of(v).unwrap_or(default).to_owned();
        let levels = t.split('/').count();
        let bad_wildcard = t.split('/').enumerate().any(|(i, level)| {
            (level.contains('#') && (level != "#" || i != levels - 1))
                || (level.contains('+') && level != "+")
        });
        if t.is_empty() || bad_wildcard || t.contains('\0') {
            self.error(at, "not a valid MQTT topic filter (e.g. qscloud/#)");
        }
        t
    }

    /// A topic to publish to (no wildcards), `default` when absent.
    pub fn topic(&mut self, v: &Option<Text>, at: &KeyPath, default: &str) -> String {
        let t = Text::of(v).unwrap_or(default).to_owned();
        if t.is_empty() || t.contains(['+', '#', '\0']) {
            self.error(at, "not a topic to publish to (no wildcards)");
        }
        t
    }

    /// An optional list of non-empty strings.
    pub fn strings(&mut self, v: &Option<Vec<Text>>, at: &KeyPath) -> Option<Vec<String>> {
        let items = v.as_ref()?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, t)| self.required(&Some(t.clone()), &at.item(i)))
                .collect(),
        )
    }
}

/// `alertEnableByTag` (a channel's or e-mail's): alert only apps with this tag.
#[derive(serde::Deserialize, JsonSchema, Default)]
#[serde(default)]
pub struct ByTag {
    /// Alert only apps with `tag` (default false).
    pub enable: Option<Flag>,
    /// The app tag that turns alerts on.
    pub tag: Option<Text>,
}
