//! Butler's forms of a reload's start, stop and creation time: `…UTC` as Qlik sent it,
//! `…Local1` (`YYYY-MM-DD hh:mm:ss`) and `…Local2`–`…Local5` (the short, medium and full US
//! English forms Node.js gives by default: `11/20/2026, 7:14:04 AM`, `Nov 20, 2026, 7:14:04 AM`,
//! `November 20, 2026 at 7:14:04 AM CET`; Butler's `…Local5` is the same as `…Local4`), all in the
//! listener's time zone (`Butler.qlikCloudListener.timeZone`, default: the machine's).
//!
//! Why: Butler users' templates show `{{executionStartTime.startTimeLocal1}}` and expect the
//! server's local time, as Butler (luxon) renders it. Pure: the time zone is passed in.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// One instant in Butler's forms; all empty when the time is unknown or unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeForms {
    pub utc: String,
    pub local1: String,
    pub local2: String,
    pub local3: String,
    pub local4: String,
    pub local5: String,
}

/// `rfc3339` in Butler's forms, in `tz`.
pub fn forms(rfc3339: Option<&str>, tz: &TimeZone) -> TimeForms {
    let Some(text) = rfc3339 else {
        return TimeForms::default();
    };
    let Ok(instant) = text.trim().parse::<Timestamp>() else {
        return TimeForms::default();
    };
    let local = instant.to_zoned_datetime(tz.clone());
    let full = local.strftime("%B %-d, %Y at %-I:%M:%S %p %Z").to_string();
    TimeForms {
        utc: text.to_owned(),
        local1: local.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        local2: local.strftime("%-m/%-d/%Y, %-I:%M:%S %p").to_string(),
        local3: local.strftime("%b %-d, %Y, %-I:%M:%S %p").to_string(),
        local4: full.clone(),
        local5: full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::time_zone as zone;

    #[test]
    fn butler_forms_in_the_given_zone() {
        let tz = zone(Some("Europe/Stockholm")).unwrap();
        let f = forms(Some("2026-11-20T06:14:04.090Z"), &tz);
        assert_eq!(f.utc, "2026-11-20T06:14:04.090Z");
        assert_eq!(f.local1, "2026-11-20 07:14:04");
        assert_eq!(f.local2, "11/20/2026, 7:14:04 AM");
        assert_eq!(f.local3, "Nov 20, 2026, 7:14:04 AM");
        assert_eq!(f.local4, "November 20, 2026 at 7:14:04 AM CET");
        assert_eq!(f.local5, f.local4);
        // Summer time, afternoon, a zone west of UTC.
        let ny = zone(Some("America/New_York")).unwrap();
        let f = forms(Some("2026-07-04T18:05:09Z"), &ny);
        assert_eq!(f.local1, "2026-07-04 14:05:09");
        assert_eq!(f.local2, "7/4/2026, 2:05:09 PM");
        assert_eq!(f.local4, "July 4, 2026 at 2:05:09 PM EDT");
    }

    #[test]
    fn unknown_or_unreadable_times_are_empty() {
        let tz = TimeZone::UTC;
        assert_eq!(forms(None, &tz), TimeForms::default());
        assert_eq!(forms(Some("yesterday"), &tz), TimeForms::default());
        assert_eq!(
            forms(Some("2026-11-20T06:14:04Z"), &tz).local1,
            "2026-11-20 06:14:04"
        );
    }

    #[test]
    fn a_wrong_zone_name_is_an_error_naming_it() {
        let e = zone(Some("Europe/Stokholm")).unwrap_err();
        assert!(
            e.contains("'Europe/Stokholm' is not a time zone name"),
            "{e}"
        );
        assert!(zone(None).is_ok());
        assert!(zone(Some("UTC")).is_ok());
    }
}
