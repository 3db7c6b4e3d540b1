//! Rhizome's engine: the pure core of the small peer.
//!
//! Everything here is deterministic code with no I/O, no clock and no
//! randomness of its own: time and entropy come in as arguments, durable
//! storage comes in through the [`kv`] traits. That is what lets the same code
//! run in an app, under the deterministic simulator, and in property tests.

pub mod codec;
pub mod doc;
pub mod dql;
pub mod hlc;
pub mod kv;
pub mod mem;
pub mod store;
pub mod sync;
pub mod testing;
pub mod value;
pub mod vv;
