//! Table-driven tests of the merge policy: one row per rule of docs/ARCHITECTURE.md (§ The
//! default merge rules), with worked examples of SfB's aggregation rules ([MS-PRES]
//! §3.8.5.1.2) and the cases the issue names explicitly.

use super::*;
use crate::model::Absence;

/// Minutes after a fixed base time (12:00 on some day), in ms.
fn m(min: i64) -> UnixMs {
    1_700_000_000_000 + min * 60_000
}

fn sig(src: Source, inst: &str, a: Option<Availability>, act: Option<Activity>, at: i64) -> Signal {
    let mut s = Signal::new(src, inst, a, m(at));
    s.activity = act;
    s
}

fn absence(id: &str, reason: &str, start: i64, end: Option<i64>, set_at: i64) -> Absence {
    Absence {
        id: id.into(),
        reason: reason.into(),
        text: None,
        start: m(start),
        end: end.map(m),
        created_at: m(set_at),
        updated_at: m(set_at),
        created_by: None,
    }
}

enum Step {
    /// A signal received at its `observed_at`.
    Sig(Signal),
    /// An absence set at its `updated_at`.
    Abs(Absence),
}

struct Want {
    availability: Availability,
    activity: Option<Activity>,
    ooo: bool,
    again: Option<i64>,
    freshness: Freshness,
}

fn want(a: Availability, act: Option<Activity>) -> Want {
    Want { availability: a, activity: act, ooo: false, again: None, freshness: Freshness::Live }
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    feeds_down: &'static [FeedId],
    at: i64,
    want: Want,
}

fn run(c: &Case, policy: &Policy) -> MergedView {
    let mut p = UserPresence::new();
    let down = c.feeds_down;
    let feed_up = |f: FeedId| !down.contains(&f);
    for step in &c.steps {
        match step {
            Step::Sig(s) => {
                let now = s.observed_at;
                p.apply(s.clone(), now, policy);
                p.recompute(now, policy, &feed_up);
            }
            Step::Abs(a) => {
                let now = a.updated_at;
                p.upsert_absence(a.clone()).unwrap();
                p.recompute(now, policy, &feed_up);
            }
        }
    }
    p.expire(m(c.at), policy);
    p.merge(m(c.at), policy, &feed_up)
}

use Availability::*;
use Source::*;

fn cases() -> Vec<Case> {
    let on_call = Some(Activity::InACall);
    vec![
        // --- Rule 1: expiry and feed health -------------------------------------------------
        Case {
            name: "rule1: a signal past valid_until no longer counts",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(0)), Some(m(60)))),
            ],
            feeds_down: &[],
            at: 61,
            want: want(Available, None),
        },
        Case {
            name: "rule1: a meeting counts only while it runs (before it starts)",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(60)), Some(m(120)))),
            ],
            feeds_down: &[],
            at: 59,
            want: want(Available, None),
        },
        Case {
            name: "rule1: a meeting counts only while it runs (during)",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(60)), Some(m(120)))),
            ],
            feeds_down: &[],
            at: 60,
            want: Want { again: Some(120), ..want(Busy, Some(Activity::InAMeeting)) },
        },
        Case {
            name: "rule1: a stale feed shows Unknown, never Offline",
            steps: vec![Step::Sig({
                let mut s = sig(Teams, "t", Some(Offline), Some(Activity::OffWork), 0);
                s.feed = 7;
                s
            })],
            feeds_down: &[7],
            at: 1,
            want: Want { freshness: Freshness::Stale, ..want(Unknown, None) },
        },
        Case {
            name: "rule1: a stale feed leaves the others standing, marked stale",
            steps: vec![
                Step::Sig({
                    let mut s = sig(Teams, "t", Some(Busy), None, 0);
                    s.feed = 7;
                    s
                }),
                Step::Sig(sig(Pbx, "1234", Some(Available), None, 0)),
            ],
            feeds_down: &[7],
            at: 1,
            want: Want { freshness: Freshness::Stale, ..want(Available, None) },
        },
        Case {
            name: "rule1: nothing known is Unknown with unknown freshness",
            steps: vec![],
            feeds_down: &[],
            at: 0,
            want: Want { freshness: Freshness::Unknown, ..want(Unknown, None) },
        },
        // --- Rule 3: ordering -----------------------------------------------------------------
        Case {
            name: "rule3: an out-of-order version is ignored",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Busy), on_call.clone(), 0).version(Version::Text("0000000002".into()))),
                Step::Sig(sig(Teams, "t", Some(Available), None, 1).version(Version::Text("0000000001".into()))),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Busy, on_call.clone()),
        },
        Case {
            name: "rule3: an equal version is ignored (duplicate delivery)",
            steps: vec![
                Step::Sig(sig(Pbx, "1234", Some(Busy), on_call.clone(), 0).version(Version::Num(5))),
                Step::Sig(sig(Pbx, "1234", Some(Available), None, 1).version(Version::Num(5))),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Busy, on_call.clone()),
        },
        Case {
            name: "rule3: a newer version replaces",
            steps: vec![
                Step::Sig(sig(Pbx, "1234", Some(Busy), on_call.clone(), 0).version(Version::Num(5))),
                Step::Sig(sig(Pbx, "1234", Some(Available), None, 1).version(Version::Num(6))),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Available, None),
        },
        // --- Rule 4: manual vs automatic, telephony exception --------------------------------
        Case {
            name: "rule4: a manual absence beats an older automatic signal",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Abs(absence("a1", "lunch", 5, Some(65), 5)),
            ],
            feeds_down: &[],
            at: 10,
            want: Want { again: Some(65), ..want(Away, Some(Activity::Lunch)) },
        },
        Case {
            name: "rule4: a manual absence set after a call started does not hide the call",
            steps: vec![
                Step::Sig(sig(Mobile, "+46701234567", Some(Busy), on_call.clone(), 0)),
                Step::Abs(absence("a1", "lunch", 5, Some(65), 5)),
            ],
            feeds_down: &[],
            at: 10,
            want: Want { again: None, ..want(Busy, on_call.clone()) },
        },
        Case {
            name: "rule4: a ringing PBX line shows through a newer vacation absence",
            steps: vec![
                Step::Sig(sig(Pbx, "1234", Some(Busy), Some(Activity::Ringing), 0)),
                Step::Abs(absence("a1", "vacation", 1, None, 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: Want { ooo: true, again: None, ..want(Busy, Some(Activity::Ringing)) },
        },
        Case {
            name: "rule4: a newer automatic signal competes with the manual one (least available)",
            steps: vec![
                Step::Abs(absence("a1", "meeting", 0, Some(60), 0)),
                Step::Sig(sig(Teams, "t", Some(DoNotDisturb), Some(Activity::Presenting), 10)),
            ],
            feeds_down: &[],
            at: 11,
            want: want(DoNotDisturb, Some(Activity::Presenting)),
        },
        Case {
            name: "rule4: an automatic repeat of an old state does not count as newer",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Abs(absence("a1", "lunch", 5, Some(65), 5)),
                // A poll restates the same Available at minute 10: still older than the lunch.
                Step::Sig(sig(Teams, "t", Some(Available), None, 10)),
            ],
            feeds_down: &[],
            at: 11,
            want: Want { again: Some(65), ..want(Away, Some(Activity::Lunch)) },
        },
        Case {
            name: "rule4: a scheduled absence starts by itself",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Abs(absence("a1", "gone_for_the_day", 300, None, 1)),
            ],
            feeds_down: &[],
            at: 301,
            want: want(Away, Some(Activity::OffWork)),
        },
        Case {
            name: "rule4: a scheduled absence does not count before it starts",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Abs(absence("a1", "gone_for_the_day", 300, None, 1)),
            ],
            feeds_down: &[],
            at: 299,
            want: want(Available, None),
        },
        Case {
            name: "rule4: an absence expires by itself",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Abs(absence("a1", "lunch", 5, Some(65), 5)),
            ],
            feeds_down: &[],
            at: 65,
            want: want(Available, None),
        },
        // --- Rule 5: across sources -----------------------------------------------------------
        Case {
            name: "rule5: least available wins (SfB example: machine 3500 + calendar 6500)",
            steps: vec![
                Step::Sig(sig(Sfb, "machine", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 1).valid(Some(m(0)), Some(m(30)))),
            ],
            feeds_down: &[],
            at: 2,
            want: Want { again: Some(30), ..want(Busy, Some(Activity::InAMeeting)) },
        },
        Case {
            name: "rule5: tentative meetings do not make anyone busy",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", None, Some(Activity::Tentative), 0).valid(Some(m(0)), Some(m(60)))),
            ],
            feeds_down: &[],
            at: 1,
            want: want(Available, None),
        },
        Case {
            name: "rule5: working elsewhere annotates only",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig(sig(Calendar, "c", None, Some(Activity::WorkingElsewhere), 0).valid(Some(m(0)), Some(m(60)))),
            ],
            feeds_down: &[],
            at: 1,
            want: want(Available, None),
        },
        Case {
            name: "rule5: out of office sets the flag and activity, availability unchanged",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Available), None, 0)),
                Step::Sig({
                    let mut s = sig(Calendar, "c", None, None, 0).valid(Some(m(0)), Some(m(600)));
                    s.ooo = true;
                    s
                }),
            ],
            feeds_down: &[],
            at: 1,
            want: Want { ooo: true, ..want(Available, Some(Activity::OutOfOffice)) },
        },
        Case {
            name: "rule5: DND beats a call's Busy, and the call still shows",
            steps: vec![
                Step::Sig(sig(Sfb, "user", Some(DoNotDisturb), None, 0)),
                Step::Sig(sig(Sfb, "phone", Some(Busy), on_call.clone(), 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: want(DoNotDisturb, on_call.clone()),
        },
        Case {
            name: "rule5: Teams Offline plus a mobile call shows the call (the person is there)",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Offline), Some(Activity::OffWork), 0)),
                Step::Sig(sig(Mobile, "+4791234567", Some(Busy), on_call.clone(), 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Busy, on_call.clone()),
        },
        // --- Rule 6: activity -------------------------------------------------------------------
        Case {
            name: "rule6: the most specific compatible activity wins (Presenting over InAMeeting at DND)",
            steps: vec![
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(0)), Some(m(60)))),
                Step::Sig(sig(Teams, "t", Some(DoNotDisturb), Some(Activity::Presenting), 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: want(DoNotDisturb, Some(Activity::Presenting)),
        },
        Case {
            name: "rule6: SfB's 6900 urgent-interruptions-only shows at Busy",
            steps: vec![Step::Sig(sig(Sfb, "aggregate", Some(Busy), Some(Activity::UrgentInterruptionsOnly), 0))],
            feeds_down: &[],
            at: 1,
            want: want(Busy, Some(Activity::UrgentInterruptionsOnly)),
        },
        Case {
            name: "rule6: an incompatible activity is not shown (meeting while Away)",
            steps: vec![
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(0)), Some(m(60)))),
                Step::Sig(sig(Teams, "t", Some(Away), None, 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Away, None),
        },
        Case {
            name: "rule6: tie on bounds goes to the newest",
            steps: vec![
                Step::Sig(sig(Pbx, "1234", Some(Busy), Some(Activity::OnHold), 0)),
                Step::Sig(sig(Mobile, "+46701234567", Some(Busy), Some(Activity::Ringing), 1)),
            ],
            feeds_down: &[],
            at: 2,
            want: want(Busy, Some(Activity::Ringing)),
        },
        // --- available_again_at -----------------------------------------------------------------
        Case {
            name: "again: lunch followed by a meeting ends when the meeting does",
            steps: vec![
                Step::Abs(absence("a1", "lunch", 0, Some(60), 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(60)), Some(m(90)))),
            ],
            feeds_down: &[],
            at: 1,
            want: Want { again: Some(90), ..want(Away, Some(Activity::Lunch)) },
        },
        Case {
            name: "again: unknown while any blocker has no end",
            steps: vec![
                Step::Sig(sig(Teams, "t", Some(Busy), None, 0)),
                Step::Sig(sig(Calendar, "c", Some(Busy), Some(Activity::InAMeeting), 0).valid(Some(m(0)), Some(m(30)))),
            ],
            feeds_down: &[],
            at: 1,
            want: want(Busy, Some(Activity::InAMeeting)),
        },
    ]
}

#[test]
fn merge_policy_table() {
    let policy = Policy::default();
    let mut failures = Vec::new();
    for c in cases() {
        let v = run(&c, &policy);
        let got = (v.availability, v.activity.clone(), v.ooo, v.available_again_at, v.freshness);
        let exp = (c.want.availability, c.want.activity.clone(), c.want.ooo, c.want.again.map(m), c.want.freshness);
        if got != exp {
            failures.push(format!("{}\n   got  {:?}\n   want {:?}", c.name, got, exp));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn telephony_exception_can_be_turned_off() {
    let policy = Policy { telephony_always_shows: false, ..Policy::default() };
    let c = Case {
        name: "manual after call, exception off",
        steps: vec![
            Step::Sig(sig(Mobile, "+46701234567", Some(Busy), Some(Activity::InACall), 0)),
            Step::Abs(absence("a1", "lunch", 5, Some(65), 5)),
        ],
        feeds_down: &[],
        at: 10,
        want: want(Away, Some(Activity::Lunch)),
    };
    let v = run(&c, &policy);
    assert_eq!((v.availability, v.activity), (Away, Some(Activity::Lunch)));
}

#[test]
fn change_is_reported_only_when_the_view_changes() {
    let policy = Policy::default();
    let up = |_: FeedId| true;
    let mut p = UserPresence::new();
    p.apply(sig(Teams, "t", Some(Busy), None, 0), m(0), &policy);
    assert!(p.recompute(m(0), &policy, &up));
    // Same state again from another instance: the merged view is unchanged → no fan-out.
    p.apply(sig(Teams, "t2", Some(Busy), None, 1), m(1), &policy);
    assert!(!p.recompute(m(1), &policy, &up));
    p.apply(sig(Teams, "t", Some(Available), None, 2), m(2), &policy);
    p.apply(sig(Teams, "t2", Some(Available), None, 2), m(2), &policy);
    assert!(p.recompute(m(2), &policy, &up));
    assert_eq!(p.view().availability, Available);
    assert_eq!(p.view().since, m(2));
}

#[test]
fn retraction_removes_the_slot() {
    let policy = Policy::default();
    let mut p = UserPresence::new();
    p.apply(sig(Pbx, "1234", Some(Busy), Some(Activity::InACall), 0), m(0), &policy);
    assert_eq!(p.apply(Signal::new(Pbx, "1234", None, m(1)), m(1), &policy), Applied::Retracted);
    assert!(p.slots().is_empty());
}

#[test]
fn slots_are_bounded_per_user() {
    let policy = Policy::default();
    let mut p = UserPresence::new();
    for i in 0..(MAX_SLOTS_PER_USER * 3) {
        p.apply(sig(Calendar, &format!("item{i}"), Some(Busy), None, i as i64), m(i as i64), &policy);
    }
    assert_eq!(p.slots().len(), MAX_SLOTS_PER_USER);
}

#[test]
fn next_deadline_finds_the_next_start_or_end() {
    let policy = Policy::default();
    let mut p = UserPresence::new();
    p.apply(sig(Calendar, "c", Some(Busy), None, 0).valid(Some(m(30)), Some(m(60))), m(0), &policy);
    p.upsert_absence(absence("a", "lunch", 10, Some(20), 0)).unwrap();
    assert_eq!(p.next_deadline(m(0), &policy), Some(m(10)));
    assert_eq!(p.next_deadline(m(10), &policy), Some(m(20)));
    assert_eq!(p.next_deadline(m(20), &policy), Some(m(30)));
    assert_eq!(p.next_deadline(m(30), &policy), Some(m(60)));
    assert_eq!(p.next_deadline(m(60), &policy), None);
}

#[test]
fn restored_state_shows_stale_until_confirmed() {
    let policy = Policy::default();
    let up = |_: FeedId| true;
    let mut p = UserPresence::new();
    let mut s = Slot {
        source: Teams,
        instance: "t".into(),
        feed: 0,
        availability: Some(Busy),
        activity: None,
        note: None,
        ooo: false,
        valid_from: None,
        valid_until: None,
        version: Some(Version::Num(9)),
        since: m(0),
        updated_at: m(0),
        restored: false,
        detail: None,
    };
    p.restore_slot(s.clone());
    p.recompute(m(1), &policy, &up);
    assert_eq!((p.view().availability, p.view().freshness), (Busy, Freshness::Stale));
    // A live signal with a *lower* version still replaces restored state (the source may
    // have restarted its counter while we were down).
    p.apply(sig(Teams, "t", Some(Available), None, 2).version(Version::Num(1)), m(2), &policy);
    p.recompute(m(2), &policy, &up);
    assert_eq!((p.view().availability, p.view().freshness), (Available, Freshness::Live));
    // Restored state that nobody confirms times out.
    s.instance = "other".into();
    let mut q = UserPresence::new();
    q.restore_slot(s);
    let ttl = policy.restored_ttl_secs as i64 * 1000;
    q.expire(m(0) + ttl, &policy);
    assert!(q.slots().is_empty());
}
