//! Simulated meshes of Rhizome peers: the real actors and protocol, many
//! peers in one process, every choice drawn from one seed. Built with
//! `--cfg madsim` it runs in virtual time and the same seed gives the same
//! run; built normally it runs on tokio in real time (same scenarios, not
//! reproducible).
//!
//! - [`plane`]: peers stand on a plane; BLE (30 m), peer-to-peer Wi-Fi
//!   (100 m) and LAN sites reach by range; walls partition them.
//! - [`board`]: the switchboard: each peer's connection planner
//!   (`rhizome_actors::conns::ConnDriver`: a few sessions per link kind,
//!   rotated) hears who is in reach; the board dials, links and closes as
//!   they decide, over modelled links (MTU, throughput, latency) with the
//!   faults of `rhizome_actors::Faults` (loss, duplication, reordering,
//!   delay spikes, clogs), and counts sessions against the limits.
//! - [`mesh`]: opening, moving, crashing (LMDB) and restarting peers,
//!   writing, and the end-of-run checks.
//! - [`scenarios`]: `partition-heal`, `chain`, `churn`, `skew`, `storm`,
//!   `crash-restart`, `crowd`, and the [`Report`] of a run.
//! - [`bound`]: the traffic lower bound (each change over a spanning tree).
//! - [`cli`]: `rhizome sim`: runs one scenario on its own runtime seeded
//!   by the seed ([`run_seeded`]) and prints one JSON line.

pub mod board;
pub mod bound;
pub mod cli;
pub mod mesh;
pub mod plane;
pub mod scenarios;

pub use cli::{main_with_args, run_seeded};
pub use mesh::{Mesh, Setup};
pub use scenarios::{Report, Scenario};

/// A small deterministic generator (xorshift64*), seeded by the scenario.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.below(1_000_000) < u64::from(ppm)
    }
}
