//! Exponential back-off with jitter, the one implementation every provider uses for
//! reconnects, re-logins and retries: the wait doubles from `first` up to `max`, and each wait
//! is drawn uniformly from its upper half ("equal jitter"), so many hubs (or many feeds of one
//! hub) that failed together do not retry in lock-step, and no wait is shorter than half the
//! nominal one.

use std::time::Duration;

/// Back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at `first`, doubling to at most `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let first = first.max(Duration::from_millis(1));
        Backoff { first, max: max.max(first), next: first, attempts: 0 }
    }

    /// The next wait (with jitter), and doubles the nominal one.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        jitter(nominal)
    }

    /// The next nominal wait, without jitter and without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Waits since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
        self.attempts = 0;
    }
}

/// A wait drawn uniformly from `[d/2, d]`.
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let span = (d - half).as_micros() as u64;
    if span == 0 {
        return d;
    }
    half + Duration::from_micros(super::secret::random_u64() % (span + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_the_upper_half_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let mut nominal = Vec::new();
        for _ in 0..5 {
            let n = b.peek();
            let d = b.next_delay();
            assert!(d >= n / 2 && d <= n, "{d:?} not in [{:?}, {n:?}]", n / 2);
            nominal.push(n.as_secs());
        }
        assert_eq!(nominal, [1, 2, 4, 5, 5]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.peek(), Duration::from_secs(1));
        assert_eq!(b.attempts(), 0);
    }
}
