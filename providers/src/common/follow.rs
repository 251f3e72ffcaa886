//! Following the live directory: what a provider holds per person (a subscription target, a
//! polled mailbox, an Entra id), kept in step with the newest directory version.
//!
//! Directory sync replaces the directory while the hub runs ([`ProviderContext::directory_changes`]).
//! A provider that holds per-person state keeps a [`Follow`]: at start and after every change
//! it calls [`Follow::update`] with what it wants of each person (`None`: nothing), and gets
//! back who was added, who left and whose value changed since what it held — level-triggered,
//! so versions skipped in between do not matter. It then subscribes the added, drops the
//! removed and re-subscribes the changed, in its own way.

use std::collections::BTreeMap;
use std::sync::Arc;

use presence_actors::directory::{Directory, PersonRef, UserIdx};
use presence_actors::provider::ProviderContext;
use tokio::sync::watch;

/// What changed between what a provider held and what it wants now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<V> {
    /// People wanted now and not held before, with their value.
    pub added: Vec<(UserIdx, V)>,
    /// People held before and not wanted now (left, or lost the field), with the old value.
    pub removed: Vec<(UserIdx, V)>,
    /// People held and wanted with another value: `(idx, old, new)`.
    pub changed: Vec<(UserIdx, V, V)>,
}

impl<V> Default for Changes<V> {
    fn default() -> Self {
        Changes { added: Vec::new(), removed: Vec::new(), changed: Vec::new() }
    }
}

impl<V> Changes<V> {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Every value held that is no longer wanted: the removed, and the changed with their old
    /// value (what to un-subscribe, drop or stop polling).
    pub fn dropped(&self) -> impl Iterator<Item = (UserIdx, &V)> {
        self.removed.iter().map(|(i, v)| (*i, v)).chain(self.changed.iter().map(|(i, old, _)| (*i, old)))
    }

    /// Every value wanted that was not held: the added, and the changed with their new value
    /// (what to subscribe or poll). Call after [`Changes::dropped`].
    pub fn taken(self) -> impl Iterator<Item = (UserIdx, V)> {
        self.added.into_iter().chain(self.changed.into_iter().map(|(i, _, new)| (i, new)))
    }
}

/// A provider's per-person values, following the live directory.
#[derive(Debug)]
pub struct Follow<V> {
    changes: watch::Receiver<Arc<Directory>>,
    held: BTreeMap<UserIdx, V>,
}

impl<V: Clone + PartialEq> Follow<V> {
    /// Follows `ctx`'s directory, holding nothing yet: the first [`Follow::update`] adds
    /// everyone wanted.
    pub fn new(ctx: &ProviderContext) -> Follow<V> {
        Follow { changes: ctx.directory_changes(), held: BTreeMap::new() }
    }

    /// Waits until a newer directory version is current (never, once the hub is gone).
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// True when a newer version is current than the one last [`Follow::update`]d to.
    pub fn has_changed(&self) -> bool {
        self.changes.has_changed().unwrap_or(false)
    }

    /// The values held, by person.
    pub fn held(&self) -> &BTreeMap<UserIdx, V> {
        &self.held
    }

    /// Reconciles with the newest directory version: `want` gives each person's value (in
    /// index order, so a closure that drops duplicates keeps the lowest index), and what
    /// changed since the values held is returned; the wanted values are held from now on.
    pub fn update(&mut self, want: impl FnMut(UserIdx, &PersonRef<'_>) -> Option<V>) -> Changes<V> {
        let dir = self.changes.borrow_and_update().clone();
        let wanted = wanted(&dir, want);
        let changes = diff(&self.held, &wanted);
        self.held = wanted;
        changes
    }
}

/// Each person's wanted value in `dir`, in index order.
pub fn wanted<V>(dir: &Directory, mut want: impl FnMut(UserIdx, &PersonRef<'_>) -> Option<V>) -> BTreeMap<UserIdx, V> {
    dir.people().filter_map(|(idx, p)| want(idx, &p).map(|v| (idx, v))).collect()
}

/// What changed from `held` to `wanted` (each list in index order).
pub fn diff<V: Clone + PartialEq>(held: &BTreeMap<UserIdx, V>, wanted: &BTreeMap<UserIdx, V>) -> Changes<V> {
    let mut out = Changes::default();
    for (idx, old) in held {
        match wanted.get(idx) {
            None => out.removed.push((*idx, old.clone())),
            Some(new) if new != old => out.changed.push((*idx, old.clone(), new.clone())),
            Some(_) => {}
        }
    }
    for (idx, new) in wanted {
        if !held.contains_key(idx) {
            out.added.push((*idx, new.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_actors::directory::{NumberPlan, Person};

    fn with_ext(id: &str, ext: &str) -> Person {
        Person { extension: Some(ext.into()), ..Person::new(id, id) }
    }

    /// A newcomer is added, a leaver removed, a changed extension changed, someone without
    /// the field left out — against what was held, whatever versions came in between.
    #[test]
    fn update_yields_the_added_the_removed_and_the_changed() {
        let dir = Directory::build(vec![with_ext("ada", "2001"), with_ext("bo", "2002"), Person::new("cy", "cy")], &NumberPlan::sweden()).expect("directory");
        let (ctx, h) = ProviderContext::for_test("t", dir, "http://127.0.0.1:9");
        let mut f: Follow<String> = Follow::new(&ctx);
        let ext = |_: UserIdx, p: &PersonRef<'_>| p.extension().map(str::to_string);
        let first = f.update(ext);
        assert_eq!(first.added.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(), ["2001", "2002"]);
        assert!(first.removed.is_empty() && first.changed.is_empty());
        assert!(!f.has_changed());

        let cur = h.directory.current();
        let (ada, bo) = (cur.by_id("ada").expect("ada"), cur.by_id("bo").expect("bo"));
        // Two versions, the first never seen: Bo leaves, Ada's extension changes, Di comes.
        let (v1, _) = cur.next(vec![with_ext("ada", "2001"), with_ext("di", "2004")]).expect("v1");
        let v1 = v1.expect("the version changes something");
        h.directory.replace(Arc::new(v1));
        let (v2, _) = h.directory.current().next(vec![with_ext("ada", "2009"), with_ext("di", "2004"), Person::new("cy", "cy")]).expect("v2");
        let v2 = v2.expect("the version changes something");
        h.directory.replace(Arc::new(v2));
        assert!(f.has_changed());
        let c = f.update(ext);
        let di = h.directory.current().by_id("di").expect("di");
        assert_eq!(c.added, vec![(di, "2004".to_string())]);
        assert_eq!(c.removed, vec![(bo, "2002".to_string())]);
        assert_eq!(c.changed, vec![(ada, "2001".to_string(), "2009".to_string())]);
        assert_eq!(c.dropped().map(|(i, v)| (i, v.as_str())).collect::<Vec<_>>(), [(bo, "2002"), (ada, "2001")]);
        assert_eq!(c.taken().collect::<Vec<_>>(), [(di, "2004".to_string()), (ada, "2009".to_string())]);
        assert!(f.update(ext).is_empty(), "nothing more");
        assert_eq!(f.held().values().map(String::as_str).collect::<Vec<_>>(), ["2009", "2004"]);
    }
}
