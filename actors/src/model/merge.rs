//! Per-user presence state and the merge policy (docs/ARCHITECTURE.md, § The default merge
//! rules) that turns it into one view.
//!
//! [`UserPresence`] holds one [`Slot`] per `(source, instance)` and the person's manual
//! absences. [`UserPresence::apply`] enforces version ordering (rule 3);
//! [`UserPresence::merge`] applies rules 1, 2, 4, 5 and 6 to produce a [`MergedView`];
//! [`MergedView::same_as`] is rule 7's change test. All of it is pure: time is an argument and
//! feed health comes in through a closure, so every rule is tested table-driven below.

use serde::Serialize;

use super::absence::{Absence, MAX_ABSENCES_PER_USER};
use super::signal::{FeedId, Freshness, PrivateDetail, Signal, Source, Version};
use super::{Activity, Availability, Policy, UnixMs};

/// Most slots kept per person; beyond it the slot that ends first (or is oldest) goes.
pub const MAX_SLOTS_PER_USER: usize = 32;

/// The newest signal of one `(source, instance)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// Source family.
    pub source: Source,
    /// Source instance.
    pub instance: super::ShortStr,
    /// Feed that delivered it.
    pub feed: FeedId,
    /// Availability; `None` annotates only.
    pub availability: Option<Availability>,
    /// Activity.
    pub activity: Option<Activity>,
    /// Note / status message.
    pub note: Option<Box<str>>,
    /// Out-of-office flag.
    pub ooo: bool,
    /// Holds from.
    pub valid_from: Option<UnixMs>,
    /// Expires at.
    pub valid_until: Option<UnixMs>,
    /// Last accepted version.
    pub version: Option<Version>,
    /// When this state (availability, activity, ooo) began; kept across identical repeats so
    /// a poll that restates an old state does not make it "newer" than a manual absence.
    pub since: UnixMs,
    /// When the slot was last written.
    pub updated_at: UnixMs,
    /// Restored from the snapshot after a restart and not yet confirmed by a live signal.
    pub restored: bool,
    /// Calendar subject / location.
    pub detail: Option<Box<PrivateDetail>>,
}

impl Slot {
    fn same_state(&self, s: &Signal) -> bool {
        self.availability == s.availability && self.activity == s.activity && self.ooo == s.ooo
    }

    /// Effective start of the state: a scheduled item counts from its `valid_from`.
    fn effective_since(&self) -> UnixMs {
        self.valid_from.map_or(self.since, |f| f.max(self.since))
    }
}

/// How a slot stands at a moment, for the detail view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotFreshness {
    /// Current, from a feed that is up.
    Live,
    /// From a feed that is down, or restored after a restart.
    Stale,
    /// Scheduled: starts later.
    Pending,
    /// Past its end.
    Expired,
}

/// A small set of sources, as a bit mask (serialised as a list of names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceSet(u8);

impl SourceSet {
    /// Adds a source.
    pub fn insert(&mut self, s: Source) {
        self.0 |= 1 << (s as u8);
    }
    /// True if the set has the source.
    pub fn contains(self, s: Source) -> bool {
        self.0 & (1 << (s as u8)) != 0
    }
    /// True if empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The sources in the set, in [`Source::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Source> {
        Source::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl Serialize for SourceSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// The merged presence of one person: what clients see.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedView {
    /// Merged availability.
    pub availability: Availability,
    /// Merged activity.
    pub activity: Option<Activity>,
    /// Absence text or the newest status message.
    pub note: Option<Box<str>>,
    /// Out-of-office flag.
    pub ooo: bool,
    /// When the person is expected to be available again, if known.
    pub available_again_at: Option<UnixMs>,
    /// Reason code of the active manual absence, if one shapes the view.
    pub absence_reason: Option<Box<str>>,
    /// How fresh the view is.
    pub freshness: Freshness,
    /// The sources that decided availability and activity.
    pub reasons: SourceSet,
    /// When the view last changed (rule 7 fields).
    pub since: UnixMs,
}

impl MergedView {
    /// Rule 7: true when nothing a client is told about differs.
    pub fn same_as(&self, o: &MergedView) -> bool {
        self.availability == o.availability
            && self.activity == o.activity
            && self.note == o.note
            && self.ooo == o.ooo
            && self.available_again_at == o.available_again_at
            && self.absence_reason == o.absence_reason
            && self.freshness == o.freshness
    }
}

/// What [`UserPresence::apply`] did with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stored (new slot or update).
    Stored,
    /// Removed the slot (a retraction).
    Retracted,
    /// Dropped: its version is not newer than the last seen (rule 3).
    OutOfOrder,
    /// Dropped: its end is already past.
    Expired,
    /// Dropped: the policy ignores this source.
    Ignored,
}

/// One person's presence state.
#[derive(Clone, Debug, Default)]
pub struct UserPresence {
    slots: Vec<Slot>,
    absences: Vec<Absence>,
    view: MergedView,
}

/// A merge candidate: a slot or an active absence that takes part at `now`.
struct Cand<'a> {
    source: Source,
    availability: Option<Availability>,
    activity: Option<&'a Activity>,
    bounds: (u32, u32),
    note: Option<&'a str>,
    ooo: bool,
    since: UnixMs,
    end: Option<UnixMs>,
    manual: bool,
    call: bool,
    restored: bool,
    reason: Option<&'a str>,
}

impl UserPresence {
    /// An empty state: nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slots, for the detail view and the snapshot.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The absences (current and scheduled), ordered by start.
    pub fn absences(&self) -> &[Absence] {
        &self.absences
    }

    /// The last merged view (as of the last [`UserPresence::recompute`]).
    pub fn view(&self) -> &MergedView {
        &self.view
    }

    /// Replaces the view (restoring from a snapshot).
    pub fn restore_view(&mut self, v: MergedView) {
        self.view = v;
    }

    /// Puts back a slot restored from the snapshot (marked stale until a live signal comes).
    pub fn restore_slot(&mut self, mut s: Slot) {
        s.restored = true;
        if self.slots.len() < MAX_SLOTS_PER_USER
            && !self.slots.iter().any(|x| x.source == s.source && x.instance == s.instance)
        {
            self.slots.push(s);
        }
    }

    /// Puts back a slot exactly as another holder of this person's state had it (its
    /// `restored` flag kept): a partition moving between the nodes of a cluster.
    pub fn carry_slot(&mut self, s: Slot) {
        if self.slots.len() < MAX_SLOTS_PER_USER && !self.slots.iter().any(|x| x.source == s.source && x.instance == s.instance) {
            self.slots.push(s);
        }
    }

    /// Applies a signal to its slot (rule 3 ordering, retraction, bounds).
    pub fn apply(&mut self, sig: Signal, now: UnixMs, policy: &Policy) -> Applied {
        if policy.ignore_sources.contains(&sig.source) {
            return Applied::Ignored;
        }
        // State restored after a restart stands in only until the first live signal: from then
        // on the providers' resync rebuilds the picture.
        if self.slots.iter().any(|s| s.restored) {
            self.slots.retain(|s| !s.restored);
        }
        let pos = self.slots.iter().position(|s| s.source == sig.source && *s.instance == *sig.instance);
        if let (Some(i), Some(v)) = (pos, &sig.version) {
            if let Some(old) = &self.slots[i].version {
                if !self.slots[i].restored && v.compare(old).is_some_and(|o| o.is_le()) {
                    return Applied::OutOfOrder;
                }
            }
        }
        if sig.is_retraction() {
            return match pos {
                Some(i) => {
                    self.slots.swap_remove(i);
                    Applied::Retracted
                }
                None => Applied::Retracted,
            };
        }
        if sig.valid_until.is_some_and(|u| u <= now) {
            if let Some(i) = pos {
                self.slots.swap_remove(i);
            }
            return Applied::Expired;
        }
        let since = match pos {
            Some(i) if self.slots[i].same_state(&sig) && !self.slots[i].restored => self.slots[i].since,
            _ => sig.observed_at.min(now),
        };
        let slot = Slot {
            source: sig.source,
            instance: sig.instance,
            feed: sig.feed,
            availability: sig.availability,
            activity: sig.activity,
            note: sig.note,
            ooo: sig.ooo,
            valid_from: sig.valid_from,
            valid_until: sig.valid_until,
            version: sig.version,
            since,
            updated_at: now,
            restored: false,
            detail: sig.detail,
        };
        match pos {
            Some(i) => self.slots[i] = slot,
            None => {
                if self.slots.len() >= MAX_SLOTS_PER_USER {
                    self.evict_one(now);
                }
                // Exact growth: most people have 1-4 slots, and doubling would waste up to
                // half of a 144-byte-per-slot vector for every one of them.
                self.slots.reserve_exact(1);
                self.slots.push(slot);
            }
        }
        Applied::Stored
    }

    /// Makes room: drops an expired slot, else the one that ends first, else the oldest.
    fn evict_one(&mut self, now: UnixMs) {
        let victim = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| match s.valid_until {
                Some(u) if u <= now => (0, u),
                Some(u) => (1, u),
                None => (2, s.updated_at),
            })
            .map(|(i, _)| i);
        if let Some(i) = victim {
            self.slots.swap_remove(i);
        }
    }

    /// Adds or replaces an absence (by id). Fails when the person already has the maximum.
    pub fn upsert_absence(&mut self, a: Absence) -> Result<(), Absence> {
        if let Some(x) = self.absences.iter_mut().find(|x| x.id == a.id) {
            *x = a;
        } else if self.absences.len() >= MAX_ABSENCES_PER_USER {
            return Err(a);
        } else {
            self.absences.push(a);
        }
        self.absences.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        Ok(())
    }

    /// Removes an absence; returns it if it was there.
    pub fn remove_absence(&mut self, id: &str) -> Option<Absence> {
        let i = self.absences.iter().position(|a| &*a.id == id)?;
        Some(self.absences.remove(i))
    }

    /// Drops slots and absences that are over (rule 1). Returns true if anything went.
    pub fn expire(&mut self, now: UnixMs, policy: &Policy) -> bool {
        let before = self.slots.len() + self.absences.len();
        let ttl = policy.restored_ttl_secs as i64 * 1000;
        self.slots
            .retain(|s| s.valid_until.is_none_or(|u| u > now) && !(s.restored && now - s.updated_at >= ttl));
        self.absences.retain(|a| !a.is_over(now));
        before != self.slots.len() + self.absences.len()
    }

    /// The next time something changes by itself (a slot or absence starts or ends, restored
    /// state times out), for the shard's timer.
    pub fn next_deadline(&self, now: UnixMs, policy: &Policy) -> Option<UnixMs> {
        let ttl = policy.restored_ttl_secs as i64 * 1000;
        let slots = self.slots.iter().flat_map(|s| {
            [s.valid_from, s.valid_until, s.restored.then_some(s.updated_at + ttl)]
        });
        let abs = self.absences.iter().flat_map(|a| [Some(a.start), a.end]);
        slots.chain(abs).flatten().filter(|t| *t > now).min()
    }

    /// How a slot stands at `now`.
    pub fn slot_freshness(s: &Slot, now: UnixMs, feed_up: &dyn Fn(FeedId) -> bool) -> SlotFreshness {
        if s.valid_until.is_some_and(|u| u <= now) {
            SlotFreshness::Expired
        } else if s.valid_from.is_some_and(|f| f > now) {
            SlotFreshness::Pending
        } else if s.restored || !feed_up(s.feed) {
            SlotFreshness::Stale
        } else {
            SlotFreshness::Live
        }
    }

    /// Recomputes the view; returns true when it changed (rule 7) and must be fanned out.
    pub fn recompute(&mut self, now: UnixMs, policy: &Policy, feed_up: &dyn Fn(FeedId) -> bool) -> bool {
        let mut v = self.merge(now, policy, feed_up);
        if v.same_as(&self.view) {
            // Reasons may shift without the client-visible view changing; keep them current.
            self.view.reasons = v.reasons;
            return false;
        }
        v.since = now;
        self.view = v;
        true
    }

    /// The merge (rules 1–8, docs/ARCHITECTURE.md § The default merge rules). Pure: depends
    /// only on the state, `now`, the policy and feed health.
    pub fn merge(&self, now: UnixMs, policy: &Policy, feed_up: &dyn Fn(FeedId) -> bool) -> MergedView {
        let ttl = policy.restored_ttl_secs as i64 * 1000;
        let mut stale_seen = false;
        let mut cands: Vec<Cand<'_>> = Vec::with_capacity(self.slots.len() + 1);

        // Rule 1: expire, skip pending, set aside sources whose feed is down (Unknown/stale).
        for s in &self.slots {
            if policy.ignore_sources.contains(&s.source) {
                continue;
            }
            match Self::slot_freshness(s, now, feed_up) {
                SlotFreshness::Expired | SlotFreshness::Pending => continue,
                SlotFreshness::Stale if !s.restored => {
                    stale_seen = true;
                    continue;
                }
                SlotFreshness::Stale if now - s.updated_at >= ttl => continue,
                _ => {}
            }
            let call = s.activity.as_ref().is_some_and(Activity::is_call) && s.source.carries_telephony();
            cands.push(Cand {
                source: s.source,
                availability: s.availability.filter(|a| a.is_known()),
                activity: s.activity.as_ref(),
                bounds: s.activity.as_ref().map_or((0, u32::MAX), |a| policy.bounds(a)),
                note: s.note.as_deref(),
                ooo: s.ooo,
                since: s.effective_since(),
                end: s.valid_until,
                manual: s.source == Source::Manual,
                call,
                restored: s.restored,
                reason: None,
            });
        }
        for a in self.absences.iter().filter(|a| a.is_active(now)) {
            let r = policy.reason(&a.reason);
            let activity = r.and_then(|r| r.activity.as_ref());
            cands.push(Cand {
                source: Source::Manual,
                availability: r.map_or(Some(Availability::Away), |r| r.availability),
                activity,
                bounds: activity.map_or((0, u32::MAX), |a| policy.bounds(a)),
                note: a.text.as_deref(),
                ooo: r.is_some_and(|r| r.ooo),
                since: a.effective_at(),
                end: a.end,
                manual: true,
                call: false,
                restored: false,
                reason: Some(&a.reason),
            });
        }

        // Rule 4: the newest manual absence hides older automatic signals — but never a call.
        let manual_at = cands.iter().filter(|c| c.manual).map(|c| c.since).max();
        if let (Some(m), true) = (manual_at, policy.manual_hides_older) {
            let keep_calls = policy.telephony_always_shows;
            cands.retain(|c| c.manual || c.since >= m || (keep_calls && c.call));
        }

        let on_call = policy.telephony_always_shows && cands.iter().any(|c| c.call);

        // Rule 5: least available wins. While on a call, "away"-type states are set aside and
        // the call's availability is the floor.
        let availability = if on_call {
            cands
                .iter()
                .filter_map(|c| c.availability)
                .filter(|a| *a <= Availability::DoNotDisturb)
                .chain(std::iter::once(policy.call_availability))
                .max()
                .unwrap_or(policy.call_availability)
        } else {
            cands.iter().filter_map(|c| c.availability).max().unwrap_or(Availability::Unknown)
        };
        let av = availability.value();

        // Rule 6: most specific compatible activity (highest min bound, then newest).
        let pick = cands
            .iter()
            .filter(|c| match c.activity {
                Some(a) if a.is_annotation() => false,
                Some(_) if on_call => c.call,
                Some(_) => c.bounds.0 <= av && av <= c.bounds.1,
                None => false,
            })
            .max_by_key(|c| (c.bounds.0, c.since));
        let ooo = cands.iter().any(|c| c.ooo);
        let activity = match pick {
            Some(c) => c.activity.cloned(),
            None if ooo && availability.is_known() => Some(Activity::OutOfOffice),
            None => None,
        };

        let mut reasons = SourceSet::default();
        if availability.is_known() {
            for c in cands.iter().filter(|c| c.availability == Some(availability) || (on_call && c.call)) {
                reasons.insert(c.source);
            }
        }
        if let Some(c) = pick {
            reasons.insert(c.source);
        }

        // Note: the newest manual absence's text, else the newest note of any candidate.
        let newest_manual = cands.iter().filter(|c| c.manual).max_by_key(|c| c.since);
        let note = newest_manual
            .and_then(|c| c.note)
            .or_else(|| cands.iter().filter(|c| c.note.is_some()).max_by_key(|c| c.since).and_then(|c| c.note))
            .map(Box::from);
        let absence_reason = newest_manual.and_then(|c| c.reason).map(Box::from);

        let freshness = if cands.is_empty() {
            if stale_seen {
                Freshness::Stale
            } else {
                Freshness::Unknown
            }
        } else if stale_seen || cands.iter().any(|c| c.restored) {
            Freshness::Stale
        } else {
            Freshness::Live
        };

        let available_again_at = self.available_again(&cands, availability, on_call, now, policy);

        MergedView {
            availability,
            activity,
            note,
            ooo,
            available_again_at,
            absence_reason,
            freshness,
            reasons,
            since: self.view.since,
        }
    }

    /// When every candidate that keeps the person unavailable has ended — following on into
    /// scheduled items that start before then — or `None` if any of them has no end.
    fn available_again(
        &self,
        cands: &[Cand<'_>],
        availability: Availability,
        on_call: bool,
        now: UnixMs,
        policy: &Policy,
    ) -> Option<UnixMs> {
        if !availability.is_known() || availability.is_available() {
            return None;
        }
        let blocks = |a: Option<Availability>| a.is_some_and(|a| !a.is_available());
        let mut t = now;
        for c in cands.iter().filter(|c| blocks(c.availability) || (on_call && c.call)) {
            t = t.max(c.end?);
        }
        // Follow chained items: a meeting right after lunch pushes the time on.
        for _ in 0..MAX_SLOTS_PER_USER {
            let mut next = t;
            for s in &self.slots {
                let starts_before = s.valid_from.is_some_and(|f| f > now && f <= t);
                if starts_before && blocks(s.availability) && !policy.ignore_sources.contains(&s.source) {
                    next = next.max(s.valid_until?);
                }
            }
            for a in &self.absences {
                let r = policy.reason(&a.reason);
                let av = r.map_or(Some(Availability::Away), |r| r.availability);
                if a.start > now && a.start <= t && blocks(av) {
                    next = next.max(a.end?);
                }
            }
            if next == t {
                break;
            }
            t = next;
        }
        (t > now).then_some(t)
    }
}

#[cfg(test)]
mod tests;
