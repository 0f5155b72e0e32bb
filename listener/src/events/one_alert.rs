//! One alert per failed reload, not per event.
//!
//! Why: Qlik sends `com.qlik.v1.app.reload.finished` for each attempt of a reload and
//! `com.qlik.v1.reload.finished` once, with the final outcome (design.md §2; qlik.dev: "while a
//! reload might be executed multiple times, there will be only one reload finished event"). So
//! one failed reload can bring several failed attempts and a failed final outcome, and a reload
//! that failed once and then succeeded on retry brings a failed attempt and a success.
//!
//! What it promises, given what the journal holds for the reload (tenant + reload id):
//! - at most one event of a reload alerts (the journal's claim makes that atomic);
//! - a failed final outcome alerts, with the data of the latest failed attempt;
//! - a failed attempt is settled without an alert once the final outcome is known (success,
//!   cancel, or a failure that alerts by itself); while it is not, it waits up to the bound when
//!   the tenant's webhook sends final outcomes, and then alerts saying the final outcome did not
//!   arrive; when it does not, it alerts at once.
//!
//! [`decide`] is pure (no I/O) and tested exhaustively; [`decide_and_claim`] is its journal
//! side: it reads the reload's events and claim, decides, and claims the reload.

use crate::journal::{Journal, JournalError};
use qlik_events::ReloadOutcome;

/// An event of the reload, as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub event_id: String,
    /// `reload.finished` (the final outcome) rather than an attempt.
    pub is_final: bool,
    pub outcome: ReloadOutcome,
}

impl Seen {
    /// A recorded event of a reload as [`decide`] sees it (`None`: not a readable reload event).
    pub fn of(entry: &crate::journal::Entry) -> Option<Seen> {
        let event = qlik_events::Event::parse(&entry.body).ok()?;
        let r = event.reload()?.ok()?;
        Some(Seen {
            event_id: entry.id.clone(),
            is_final: r.is_final,
            outcome: r.outcome,
        })
    }
}

/// What one failed event of a reload should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Alert (once the reload is claimed). `note` goes into the alert; `attempt` is the failed
    /// attempt whose data completes a final outcome's alert.
    Alert {
        note: Option<String>,
        attempt: Option<String>,
    },
    /// Wait for the final outcome until this time (unix ms), then decide again.
    Wait { until_ms: i64 },
    /// No alert from this event, and why (recorded with it).
    Settled(String),
}

/// Everything [`decide`] looks at.
pub struct Situation<'a> {
    /// The failed event to decide on.
    pub me: &'a Seen,
    pub reload_id: &'a str,
    /// The reload's other events, oldest first.
    pub others: &'a [Seen],
    /// The event that already alerts for the reload, if any.
    pub claimed_by: Option<&'a str>,
    /// For a failed attempt: when it was received (unix ms) and how long it may wait for the
    /// final outcome; `None`: the tenant's webhook does not send final outcomes, alert at once.
    pub wait: Option<(i64, u64)>,
    pub now_ms: i64,
}

/// [`decide`] for `me`, a failed event of `reload_id`, from what the journal holds; when the
/// decision is to alert, the reload is claimed for `me` first (atomic in the journal, across
/// listeners sharing it): if another event holds the claim, `me` is settled instead.
pub async fn decide_and_claim(
    journal: &Journal,
    me: &Seen,
    tenant_id: &str,
    reload_id: &str,
    wait: Option<(i64, u64)>,
) -> Result<Decision, JournalError> {
    let claimed_by = journal.reload_claim(tenant_id, reload_id).await?;
    let others: Vec<Seen> = journal
        .reload_events(tenant_id, reload_id)
        .await?
        .iter()
        .filter(|e| e.id != me.event_id)
        .filter_map(Seen::of)
        .collect();
    let decision = decide(&Situation {
        me,
        reload_id,
        others: &others,
        claimed_by: claimed_by.as_deref(),
        wait,
        now_ms: crate::journal::now_ms(),
    });
    if let Decision::Alert { .. } = decision {
        let holder = journal
            .claim_reload(tenant_id, reload_id, &me.event_id)
            .await?;
        if holder != me.event_id {
            return Ok(Decision::Settled(alerted_with(reload_id, &holder)));
        }
    }
    Ok(decision)
}

pub fn decide(s: &Situation<'_>) -> Decision {
    let latest_failed_attempt = || {
        s.others
            .iter()
            .rev()
            .find(|o| !o.is_final && o.outcome == ReloadOutcome::Failed)
            .map(|o| o.event_id.clone())
    };
    match s.claimed_by {
        Some(holder) if holder == s.me.event_id => {
            // Claimed before a restart: carry on with the alert.
            let attempt = s.me.is_final.then(latest_failed_attempt).flatten();
            return Decision::Alert {
                note: None,
                attempt,
            };
        }
        Some(holder) => return Decision::Settled(alerted_with(s.reload_id, holder)),
        None => {}
    }
    if s.me.is_final {
        return Decision::Alert {
            note: None,
            attempt: latest_failed_attempt(),
        };
    }
    if let Some(last) = s.others.iter().find(|o| o.is_final) {
        let id = &last.event_id;
        return match last.outcome {
            ReloadOutcome::Succeeded => Decision::Settled(format!(
                "failed attempt; the reload succeeded on retry (event {id})"
            )),
            ReloadOutcome::Canceled => Decision::Settled(format!(
                "failed attempt; the reload was then canceled (event {id})"
            )),
            ReloadOutcome::Failed => Decision::Settled(format!(
                "failed attempt; the reload's final outcome (event {id}) carries the alert"
            )),
            ReloadOutcome::Unknown => Decision::Alert {
                note: Some(format!(
                    "The reload's final outcome (event {id}) could not be read; this alert is for a failed attempt."
                )),
                attempt: None,
            },
        };
    }
    match s.wait {
        Some((received_at, secs)) => {
            let until_ms = received_at.saturating_add(secs.saturating_mul(1000) as i64);
            if s.now_ms < until_ms {
                Decision::Wait { until_ms }
            } else {
                Decision::Alert {
                    note: Some(format!(
                        "Qlik Cloud did not report this reload's final outcome within {}: this alert is for a failed attempt, and the reload may have been retried since.",
                        minutes(secs)
                    )),
                    attempt: None,
                }
            }
        }
        None => Decision::Alert {
            note: None,
            attempt: None,
        },
    }
}

/// Why an event of a reload does not alert: `holder` alerts for it.
pub fn alerted_with(reload_id: &str, holder: &str) -> String {
    format!("one alert per reload: reload {reload_id} is alerted with event {holder}")
}

fn minutes(secs: u64) -> String {
    match secs {
        60 => "1 minute".into(),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        1 => "1 second".into(),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReloadOutcome::*;

    fn seen(id: &str, is_final: bool, outcome: ReloadOutcome) -> Seen {
        Seen {
            event_id: id.into(),
            is_final,
            outcome,
        }
    }

    fn decide_for(me: &Seen, others: &[Seen], claimed_by: Option<&str>, wait: bool) -> Decision {
        decide(&Situation {
            me,
            reload_id: "r1",
            others,
            claimed_by,
            wait: wait.then_some((1_000, 60)),
            now_ms: 2_000,
        })
    }

    #[test]
    fn a_failed_final_outcome_alerts_with_the_latest_failed_attempt() {
        let me = seen("f", true, Failed);
        let others = [seen("a1", false, Failed), seen("a2", false, Failed)];
        let d = decide_for(&me, &others, None, true);
        assert_eq!(
            d,
            Decision::Alert {
                note: None,
                attempt: Some("a2".into())
            }
        );
        assert_eq!(
            decide_for(&me, &[], None, false),
            Decision::Alert {
                note: None,
                attempt: None
            }
        );
    }

    #[test]
    fn a_failed_attempt_settles_once_the_final_outcome_is_known() {
        let me = seen("a", false, Failed);
        for (outcome, says) in [
            (Succeeded, "succeeded on retry (event f)"),
            (Canceled, "canceled (event f)"),
            (Failed, "final outcome (event f) carries the alert"),
        ] {
            let d = decide_for(&me, &[seen("f", true, outcome)], None, true);
            assert!(
                matches!(&d, Decision::Settled(n) if n.contains(says)),
                "{d:?}"
            );
        }
        let d = decide_for(&me, &[seen("f", true, Unknown)], None, true);
        assert!(
            matches!(&d, Decision::Alert { note: Some(n), .. } if n.contains("could not be read")),
            "{d:?}"
        );
    }

    #[test]
    fn a_failed_attempt_waits_for_the_final_outcome_within_the_bound() {
        let me = seen("a", false, Failed);
        assert_eq!(
            decide_for(&me, &[], None, true),
            Decision::Wait { until_ms: 61_000 }
        );
        let late = decide(&Situation {
            me: &me,
            reload_id: "r1",
            others: &[],
            claimed_by: None,
            wait: Some((1_000, 60)),
            now_ms: 61_000,
        });
        assert!(
            matches!(&late, Decision::Alert { note: Some(n), attempt: None } if n.contains("did not report this reload's final outcome within 1 minute")),
            "{late:?}"
        );
        // A webhook without final outcomes: at once.
        assert_eq!(
            decide_for(&me, &[], None, false),
            Decision::Alert {
                note: None,
                attempt: None
            }
        );
        // Another attempt failing does not end the wait.
        assert_eq!(
            decide_for(&me, &[seen("a0", false, Failed)], None, true),
            Decision::Wait { until_ms: 61_000 }
        );
    }

    #[test]
    fn a_claimed_reload_alerts_once() {
        for me in [seen("a", false, Failed), seen("f", true, Failed)] {
            let d = decide_for(&me, &[], Some("x"), true);
            assert!(
                matches!(&d, Decision::Settled(n) if n.contains("alerted with event x")),
                "{d:?}"
            );
            // Its own claim (a restart after claiming): the alert goes on.
            let d = decide_for(&me, &[seen("a0", false, Failed)], Some(&me.event_id), true);
            assert!(matches!(d, Decision::Alert { .. }), "{d:?}");
        }
    }
}
