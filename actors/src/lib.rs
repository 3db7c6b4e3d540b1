//! The Rhizome small peer as apps embed it: a small actor toolkit
//! ([`actor`]), the subsystem actors built on it, and the [`Peer`] handle.
//!
//! Every subsystem is an actor that owns its state and talks in typed
//! messages; the same code runs on tokio in an app and inside madsim in the
//! simulator (the `tokio` dependency is `madsim-tokio`).

pub mod actor;
