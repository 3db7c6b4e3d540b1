//! The Rhizome small peer as apps embed it: a small actor toolkit
//! ([`actor`]), the subsystem actors built on it, and the [`Peer`] handle.
//!
//! Every subsystem is an actor that owns its state and talks in typed
//! messages; the same code runs on tokio in an app and inside madsim in the
//! simulator (the `tokio` dependency is `madsim-tokio`). The actors:
//!
//! | actor | owns | module |
//! |---|---|---|
//! | store | the store (LMDB environment or in-memory tables) | `store` |
//! | observer | live queries and their consumers' slots | `observer` |
//! | merger | applying batches of remote changes | `merger` |
//! | presence | the graph of connected peers and links | `presence` |
//! | session (one per remote peer) | a sync session's state | `session` |
//!
//! Transports attach their links to sessions (several links to one peer
//! share its session: the link manager, `links`);
//! [`conns::ConnDriver`] decides which peers to hold sessions with.

#![warn(missing_docs)]

pub mod actor;
pub mod conns;
mod error;
mod latest;
mod link;
mod links;
mod merger;
mod observer;
mod peer;
mod presence;
pub mod rt;
mod session;
mod store;

pub use actor::{Addr, WeakAddr};
pub use error::PeerError;
pub use link::{Direction, Faults, LinkModel, LinkStats};
pub use merger::{MergeStats, MAX_BATCH_CHANGES, MAX_JOINED_BATCHES};
pub use observer::QueryEvent;
pub use peer::{
    AttachedLink, InProcessLink, LiveQuery, ObserverHandle, Peer, PeerConfig, Presence, PresenceStream, QueryResult,
    Storage, StoreApi, Subscription, Subsystem, SyncApi, SyncConfig, Tx,
};
pub use presence::{Link, LinkKind, PresenceGraph};
pub use rhizome_engine::dql::exec::DqlError;
pub use rhizome_engine::dql::observe::{Diff, Rows};
pub use rhizome_engine::hlc::PeerId;
pub use rhizome_engine::store::StoreError;
pub use rhizome_engine::value::Value;
