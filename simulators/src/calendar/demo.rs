//! The demo company's calendars: a plausible working day for everyone
//! ([`CalendarSim::seed_demo`]) and a thread that keeps booking meetings that start soon and
//! dropping those that have ended ([`CalendarSim::drive_demo`]), so meetings keep starting and
//! ending while the demo runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, CalendarSim, Event, Status, DAY_MS, MINUTE_MS};
use crate::graph::{now_ms, Rng};

const DEMO_SUBJECTS: [&str; 14] = [
    "Veckomöte",
    "Kundmöte",
    "Lunch med kund",
    "1:1",
    "Styrelsemöte",
    "Projektavstämning",
    "Säljmöte",
    "Planering Q3",
    "Workshop: ny webbplats",
    "Intervju",
    "Budgetgenomgång",
    "Leverantörsmöte",
    "Avstämning med ekonomi",
    "Utvecklingssamtal",
];
const DEMO_LOCATIONS: [Option<&str>; 7] = [
    Some("Konferensrum Stockholm"),
    Some("Rum 3.14"),
    Some("Microsoft Teams-möte"),
    Some("Kontoret Göteborg"),
    Some("Kundens lokaler"),
    None,
    None,
];
const DEMO_OOF: [&str; 4] = ["Semester", "Ledig", "Utbildning", "Konferens i Malmö"];
const DEMO_ELSEWHERE: [&str; 3] = ["Jobbar hemifrån", "På kundplats", "Distansarbete"];

fn pick<T: Copy>(rng: &mut Rng, list: &[T], fallback: T) -> T {
    list.get(rng.below(list.len() as u64) as usize).copied().unwrap_or(fallback)
}

/// A meeting over `[start, start + minutes)`: busy (15 % tentative), 10 % private.
fn demo_meeting(rng: &mut Rng, start: i64, minutes: i64) -> Event {
    let status = if rng.below(100) < 15 { Status::Tentative } else { Status::Busy };
    Event {
        start,
        end: start + minutes * MINUTE_MS,
        status,
        subject: Some(pick(rng, &DEMO_SUBJECTS, "Möte").to_string()),
        location: pick(rng, &DEMO_LOCATIONS, None).map(str::to_string),
        private: rng.below(100) < 10,
    }
}

/// True when `[start, end)` meets none of `events`' busy or tentative items.
fn free_for(events: &[Event], start: i64, end: i64) -> bool {
    !events.iter().any(|e| matches!(e.status, Status::Busy | Status::Tentative | Status::Oof) && e.overlaps(start, end))
}

/// One person's working day around `now` (whole minutes).
fn demo_day(rng: &mut Rng, now: i64) -> Vec<Event> {
    let now = now - now.rem_euclid(MINUTE_MS);
    let mut events = Vec::new();
    if rng.below(100) < 4 {
        let day = now - now.rem_euclid(DAY_MS);
        let subject = pick(rng, &DEMO_OOF, "Ledig").to_string();
        events.push(Event { start: day, end: day + DAY_MS, status: Status::Oof, subject: Some(subject), location: None, private: false });
        return events;
    }
    if rng.below(100) < 10 {
        let start = now - (60 + rng.below(120) as i64) * MINUTE_MS;
        let end = now + (120 + rng.below(240) as i64) * MINUTE_MS;
        let subject = pick(rng, &DEMO_ELSEWHERE, "Distansarbete").to_string();
        events.push(Event { start, end, status: Status::WorkingElsewhere, subject: Some(subject), location: None, private: false });
    }
    if rng.below(100) < 30 {
        let minutes = 15 * (1 + rng.below(6) as i64);
        let start = if rng.below(2) == 0 {
            // Under way: started up to half its length ago.
            now - rng.below((minutes / 2) as u64 + 1) as i64 * MINUTE_MS
        } else {
            now + (1 + rng.below(30) as i64) * MINUTE_MS
        };
        events.push(demo_meeting(rng, start, minutes));
    }
    // Earlier today, already over.
    if rng.below(2) == 0 {
        let minutes = 30 * (1 + rng.below(2) as i64);
        let end = now - (15 + rng.below(120) as i64) * MINUTE_MS;
        let e = demo_meeting(rng, end - minutes * MINUTE_MS, minutes);
        if free_for(&events, e.start, e.end) {
            events.push(e);
        }
    }
    // Later today.
    for _ in 0..rng.below(3) {
        let start = now + (45 + rng.below(300) as i64) * MINUTE_MS;
        let start = start - start.rem_euclid(15 * MINUTE_MS);
        let minutes = 30 * (1 + rng.below(2) as i64);
        let e = demo_meeting(rng, start, minutes);
        if free_for(&events, e.start, e.end) {
            events.push(e);
        }
    }
    events.sort_by_key(|e| (e.start, e.end));
    events
}

impl CalendarSim {
    /// Fills a plausible working day around now for `mailboxes` (replacing their calendars):
    /// about 30 % have a meeting under way or starting within 1–30 minutes (15–90 minutes
    /// long, some tentative, some private), some work elsewhere, a few are out of office all
    /// day, and others have meetings earlier or later in the day. Swedish subjects.
    pub fn seed_demo(&self, mailboxes: &[String], seed: u64) {
        self.seed_demo_at(mailboxes, seed, now_ms());
    }

    /// [`seed_demo`](Self::seed_demo) at `now`.
    pub(super) fn seed_demo_at(&self, mailboxes: &[String], seed: u64, now: i64) {
        let mut rng = Rng::new(seed);
        let mut g = lock(&self.state);
        for m in mailboxes {
            g.calendars.insert(m.to_lowercase(), demo_day(&mut rng, now));
        }
    }

    /// Keeps the demo moving, on a thread of its own until the simulator is dropped: every
    /// `every` (± half) it drops the meetings that have ended and books a new one for a random
    /// person, starting 1–10 minutes ahead and lasting 15–60 minutes, so meetings keep starting
    /// and ending while the demo runs.
    pub fn drive_demo(self: &Arc<Self>, mailboxes: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("cal-sim-demo".into()).spawn(move || {
            let mut rng = Rng::new(seed);
            let every_ms = every.as_millis().min(u64::MAX as u128) as u64;
            loop {
                let wait = Duration::from_millis(every_ms / 2 + rng.below(every_ms.saturating_add(1)));
                let until = Instant::now() + wait;
                // Sleep in slices so a dropped simulator ends the thread soon.
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                    if sim.strong_count() == 0 {
                        return;
                    }
                }
                let Some(sim) = sim.upgrade() else { return };
                if mailboxes.is_empty() {
                    return;
                }
                sim.demo_step(&mailboxes, &mut rng, now_ms());
            }
        })?;
        Ok(())
    }

    /// One step of [`drive_demo`](Self::drive_demo) at `now`.
    pub(super) fn demo_step(&self, mailboxes: &[String], rng: &mut Rng, now: i64) {
        let mut g = lock(&self.state);
        for evs in g.calendars.values_mut() {
            evs.retain(|e| e.end > now);
        }
        let now = now - now.rem_euclid(MINUTE_MS);
        for _ in 0..5 {
            let Some(who) = mailboxes.get(rng.below(mailboxes.len() as u64) as usize) else { return };
            let start = now + (1 + rng.below(10) as i64) * MINUTE_MS;
            let minutes = 15 * (1 + rng.below(4) as i64);
            let e = demo_meeting(rng, start, minutes);
            let cal = g.calendars.entry(who.to_lowercase()).or_default();
            if free_for(cal, e.start, e.end) {
                cal.push(e);
                return;
            }
        }
    }
}
