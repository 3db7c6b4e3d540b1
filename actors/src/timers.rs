//! An actor's timer queue: delayed messages wait here, and one sleeping
//! task stands for each distinct earliest deadline, instead of one task per
//! timer.
//!
//! Why: a sync session asks for a timer with almost every offer it makes
//! (a 2 s poke timer, a 200 ms acknowledgement timer), most of which find
//! nothing to do when they fire. As one spawned task each, they were a
//! tenth of the simulator's memory at its peak (massif, 100 peers: 2.8 of
//! 27.5 MB in timer tasks and their task records). Here a timer costs a
//! map entry, and a sleeper is spawned only when no live one wakes at or
//! before the new earliest deadline.
//!
//! Pure bookkeeping: the caller passes the time in and spawns the sleepers
//! this asks for.

use std::collections::{BTreeMap, BTreeSet};
use tokio::time::{Duration, Instant};

/// Most timers one actor holds: far above what a session asks for (a few
/// per message it handles, each gone within `stall_ms`); past it a timer
/// is refused rather than letting a runaway actor grow without bound.
pub(crate) const MAX_TIMERS: usize = 65_536;

/// Delayed messages of one actor, by deadline.
pub(crate) struct Timers<M> {
    /// Deadline and insertion number (so equal deadlines keep their order).
    queue: BTreeMap<(Instant, u64), M>,
    next_seq: u64,
    /// Deadlines of the sleeping tasks not yet heard from.
    sleepers: BTreeSet<Instant>,
}

impl<M> Default for Timers<M> {
    fn default() -> Self {
        Timers {
            queue: BTreeMap::new(),
            next_seq: 0,
            sleepers: BTreeSet::new(),
        }
    }
}

impl<M> Timers<M> {
    /// Queues `msg` for `after_ms` past `now`. Returns the deadline of a
    /// sleeper to spawn, if none wakes early enough; `Err(msg)` when the
    /// queue is full.
    pub(crate) fn add(&mut self, now: Instant, after_ms: u64, msg: M) -> Result<Option<Instant>, M> {
        if self.queue.len() >= MAX_TIMERS {
            return Err(msg);
        }
        let deadline = now + Duration::from_millis(after_ms);
        self.queue.insert((deadline, self.next_seq), msg);
        self.next_seq += 1;
        Ok(self.arm())
    }

    /// The sleeper for `woke` woke at `now`: the messages due, in deadline
    /// order, and the deadline of a sleeper to spawn for the rest, if any.
    pub(crate) fn due(&mut self, now: Instant, woke: Instant) -> (Vec<M>, Option<Instant>) {
        self.sleepers.remove(&woke);
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        (due, self.arm())
    }

    /// Timers waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// A sleeper for the earliest deadline, unless one wakes by then.
    fn arm(&mut self) -> Option<Instant> {
        let (&(next, _), _) = self.queue.first_key_value()?;
        if self.sleepers.first().is_some_and(|&s| s <= next) {
            return None;
        }
        self.sleepers.insert(next);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sleeper_serves_every_later_timer() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.add(t0, 200, "ack"), Ok(Some(t0 + Duration::from_millis(200))));
        // Later timers wait behind the armed sleeper.
        assert_eq!(t.add(t0, 2_000, "poke"), Ok(None));
        assert_eq!(t.add(t0, 200, "ack2"), Ok(None));
        // An earlier one needs its own.
        assert_eq!(t.add(t0, 5, "flush"), Ok(Some(t0 + Duration::from_millis(5))));
        let (due, next) = t.due(t0 + Duration::from_millis(5), t0 + Duration::from_millis(5));
        assert_eq!(due, vec!["flush"]);
        assert_eq!(next, None, "the 200 ms sleeper is still live");
        let at = t0 + Duration::from_millis(200);
        let (due, next) = t.due(at, at);
        assert_eq!(due, vec!["ack", "ack2"], "equal deadlines keep their order");
        assert_eq!(next, Some(t0 + Duration::from_millis(2_000)));
        let at = t0 + Duration::from_millis(2_000);
        assert_eq!(t.due(at, at), (vec!["poke"], None));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_late_or_stray_wake_delivers_only_what_is_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let first = t.add(t0, 10, 1).unwrap().unwrap();
        assert_eq!(t.add(t0, 30, 2), Ok(None));
        // Woken early (a stray sleeper): nothing is due, the armed one stays.
        assert_eq!(t.due(t0 + Duration::from_millis(1), t0), (vec![], None));
        // Woken late: everything due at once.
        assert_eq!(t.due(t0 + Duration::from_millis(40), first), (vec![1, 2], None));
    }

    #[test]
    fn the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..MAX_TIMERS {
            assert!(t.add(t0, 1_000, i).is_ok());
        }
        assert_eq!(t.add(t0, 1_000, MAX_TIMERS), Err(MAX_TIMERS));
    }
}
