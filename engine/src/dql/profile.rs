//! What `PROFILE` reports: rows in and out of each operator of a run, and
//! the time spent in it.
//!
//! The engine has no clock, so the caller lends one (microseconds, any
//! origin); without it only row counts are reported. Operators are listed
//! in the order they first ran. Timing every row costs a few clock reads
//! per row, so only `PROFILE` pays it: the normal path passes no profile.

use crate::value::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A clock in microseconds, lent by the caller.
pub type ClockUs<'c> = &'c dyn Fn() -> u64;

#[derive(Clone, Copy, Default)]
struct Stats {
    rows_in: u64,
    rows_out: u64,
    time_us: u64,
}

/// Per-operator statistics of one statement.
pub struct Profile<'c> {
    clock: Option<ClockUs<'c>>,
    ops: RefCell<Vec<(&'static str, Stats)>>,
}

impl<'c> Profile<'c> {
    /// A profile timed by `clock` (or counting rows only).
    pub fn new(clock: Option<ClockUs<'c>>) -> Profile<'c> {
        Profile {
            clock,
            ops: RefCell::new(Vec::new()),
        }
    }

    /// The clock's reading, or 0 without one.
    pub fn now_us(&self) -> u64 {
        self.clock.map_or(0, |c| c())
    }

    /// Adds rows and time to an operator.
    pub fn add(&self, op: &'static str, rows_in: u64, rows_out: u64, time_us: u64) {
        let mut ops = self.ops.borrow_mut();
        let at = match ops.iter().position(|(name, _)| *name == op) {
            Some(at) => at,
            None => {
                ops.push((op, Stats::default()));
                ops.len() - 1
            }
        };
        let s = &mut ops[at].1;
        s.rows_in += rows_in;
        s.rows_out += rows_out;
        s.time_us += time_us;
    }

    /// Time spent in the operators so far.
    pub fn spent_us(&self) -> u64 {
        self.ops.borrow().iter().map(|(_, s)| s.time_us).sum()
    }

    /// The operators as JSON: `[{operator, rows_in, rows_out, time_us}]`
    /// (`time_us` only with a clock).
    pub fn operators(&self) -> Value {
        let ops = self.ops.borrow();
        Value::Array(
            ops.iter()
                .map(|(name, s)| {
                    let mut o = BTreeMap::new();
                    o.insert("operator".to_string(), Value::from(*name));
                    o.insert("rows_in".to_string(), Value::Int(s.rows_in as i64));
                    o.insert("rows_out".to_string(), Value::Int(s.rows_out as i64));
                    if self.clock.is_some() {
                        o.insert("time_us".to_string(), Value::Int(s.time_us as i64));
                    }
                    Value::Object(o)
                })
                .collect(),
        )
    }

    /// Whether times are measured.
    pub fn timed(&self) -> bool {
        self.clock.is_some()
    }
}

/// Runs one operator step on one row: `step` says whether the row goes on.
/// Without a profile it is a plain call.
pub fn step<E>(
    profile: Option<&Profile<'_>>,
    op: &'static str,
    step: impl FnOnce() -> Result<bool, E>,
) -> Result<bool, E> {
    let Some(p) = profile else { return step() };
    let start = p.now_us();
    let out = step()?;
    p.add(op, 1, u64::from(out), p.now_us().saturating_sub(start));
    Ok(out)
}
