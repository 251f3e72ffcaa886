//! The live directory: the current [`Directory`] version, replaced as a whole when directory
//! sync applies a pass, and watched by whoever must follow it (providers subscribing the
//! newcomers and dropping the leavers, the SIP server).
//!
//! A [`Directory`] is immutable; [`Directory::next`] builds the next version with every index
//! that stays kept stable, so presence state, subscriptions and stream filters keyed by
//! [`crate::directory::UserIdx`] stay valid across versions. Readers take the current version
//! (`current()`, an `Arc` clone) and use it for as long as one request or one pass lasts.

use std::sync::Arc;

use tokio::sync::watch;

use crate::directory::Directory;

/// The current directory version and its watchers.
#[derive(Debug)]
pub struct LiveDirectory {
    tx: watch::Sender<Arc<Directory>>,
}

impl LiveDirectory {
    /// A live directory starting at `directory`.
    pub fn new(directory: Directory) -> LiveDirectory {
        LiveDirectory { tx: watch::Sender::new(Arc::new(directory)) }
    }

    /// The current version.
    pub fn current(&self) -> Arc<Directory> {
        self.tx.borrow().clone()
    }

    /// A receiver that is told about every new version (`changed().await`). Watchers
    /// reconcile with the newest version they see: versions in between may be skipped.
    pub fn watch(&self) -> watch::Receiver<Arc<Directory>> {
        self.tx.subscribe()
    }

    /// Makes `directory` the current version and wakes the watchers.
    pub fn replace(&self, directory: Arc<Directory>) {
        self.tx.send_replace(directory);
    }
}
