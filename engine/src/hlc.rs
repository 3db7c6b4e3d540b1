//! Hybrid logical clock: the order of every write in the mesh.
//!
//! A timestamp packs wall-clock milliseconds (upper 48 bits) and a logical
//! counter (lower 16 bits) into one `u64`, so it sorts as a number, stays close
//! to real time for humans, and still moves forward when the wall clock stalls
//! or steps back. Together with the writing peer's id (a [`Stamp`]) it totally
//! orders writes: every replica picks the same last writer.
//!
//! The clock never reads time itself; callers pass `now_ms`. It must never go
//! backwards across restarts, so the store persists its high-water mark. A
//! remote timestamp more than `max_drift_ms` ahead of our wall clock is refused:
//! accepting it would drag our clock (and every later write) into the future.

use serde::{Deserialize, Serialize};
use std::fmt;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// Default bound on how far a remote timestamp may run ahead of our wall clock.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60 * 60 * 1000;

/// A hybrid logical timestamp.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The timestamp before every other.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a timestamp from wall milliseconds and a logical counter.
    pub fn new(wall_ms: u64, logical: u16) -> Hlc {
        Hlc((wall_ms << LOGICAL_BITS) | logical as u64)
    }

    /// Wall-clock part, in milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical part.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The next timestamp after `self`.
    fn successor(self) -> Hlc {
        Hlc(self.0 + 1)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// A peer's identity: 64 random bits chosen when its store is created.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct PeerId(pub u64);

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The identity of one write: when (HLC) and who. Orders writes totally.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// When.
    pub hlc: Hlc,
    /// Who; breaks ties between equal timestamps.
    pub peer: PeerId,
}

impl Stamp {
    /// The stamp before every other.
    pub const ZERO: Stamp = Stamp {
        hlc: Hlc::ZERO,
        peer: PeerId(0),
    };
}

/// Errors of the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockError {
    /// A remote timestamp is further ahead of our wall clock than allowed.
    TooFarInFuture {
        /// The remote timestamp's wall time.
        remote_ms: u64,
        /// Our wall clock.
        now_ms: u64,
        /// The bound that was exceeded.
        max_drift_ms: u64,
    },
    /// The clock reached the end of its 48-bit millisecond range.
    Exhausted,
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::TooFarInFuture {
                remote_ms,
                now_ms,
                max_drift_ms,
            } => write!(
                f,
                "remote timestamp {remote_ms} ms is {} ms ahead of local time {now_ms} ms (limit {max_drift_ms} ms)",
                remote_ms.saturating_sub(*now_ms)
            ),
            ClockError::Exhausted => write!(f, "hybrid logical clock exhausted its range"),
        }
    }
}

impl std::error::Error for ClockError {}

/// A peer's clock. Monotonic: every `tick` is greater than every earlier tick
/// and every timestamp observed.
#[derive(Clone, Debug)]
pub struct Clock {
    last: Hlc,
    max_drift_ms: u64,
}

impl Clock {
    /// A clock that resumes after `high_water` (the greatest timestamp this peer
    /// ever issued or observed, as persisted).
    pub fn new(high_water: Hlc, max_drift_ms: u64) -> Clock {
        Clock {
            last: high_water,
            max_drift_ms,
        }
    }

    /// The greatest timestamp issued or observed so far.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Issues a new timestamp for a local write.
    pub fn tick(&mut self, now_ms: u64) -> Result<Hlc, ClockError> {
        let wall = Hlc::new(now_ms.min(Hlc(u64::MAX).wall_ms()), 0);
        let next = if wall > self.last { wall } else { self.last.successor() };
        if next.0 == u64::MAX {
            return Err(ClockError::Exhausted);
        }
        debug_assert!(next > self.last);
        self.last = next;
        Ok(next)
    }

    /// Checks a remote timestamp against the drift bound without changing the clock.
    pub fn check(&self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        if remote.wall_ms() > now_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockError::TooFarInFuture {
                remote_ms: remote.wall_ms(),
                now_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Takes a remote timestamp into account, so that later ticks order after it.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        self.check(remote, now_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_wall_clock_steps_back() {
        let mut c = Clock::new(Hlc::ZERO, DEFAULT_MAX_DRIFT_MS);
        let a = c.tick(1_000).unwrap();
        let b = c.tick(500).unwrap();
        let d = c.tick(1_000).unwrap();
        assert!(a < b && b < d);
        assert_eq!(b.wall_ms(), 1_000);
        assert_eq!(c.tick(2_000).unwrap(), Hlc::new(2_000, 0));
    }

    #[test]
    fn resumes_after_high_water() {
        let mut c = Clock::new(Hlc::new(5_000, 7), DEFAULT_MAX_DRIFT_MS);
        assert_eq!(c.tick(10).unwrap(), Hlc::new(5_000, 8));
    }

    #[test]
    fn logical_overflow_carries_into_wall() {
        let mut c = Clock::new(Hlc::new(7, u16::MAX), DEFAULT_MAX_DRIFT_MS);
        assert_eq!(c.tick(0).unwrap(), Hlc::new(8, 0));
    }

    #[test]
    fn refuses_remote_far_in_future() {
        let mut c = Clock::new(Hlc::ZERO, 1_000);
        let now = 100_000;
        assert!(c.observe(Hlc::new(now + 1_000, 3), now).is_ok());
        let e = c.observe(Hlc::new(now + 1_001, 0), now).unwrap_err();
        assert!(matches!(e, ClockError::TooFarInFuture { .. }));
        assert_eq!(
            c.last(),
            Hlc::new(now + 1_000, 3),
            "a refused timestamp leaves the clock untouched"
        );
        assert!(c.tick(now).unwrap() > Hlc::new(now + 1_000, 3));
    }
}
