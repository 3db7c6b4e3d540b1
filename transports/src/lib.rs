//! Real links between peers, behind one [`Transport`] trait.
//!
//! A transport finds remote peers, authenticates them, and runs a sync
//! session with each over a link that carries whole frames: it hands the
//! session's frames to the wire and the wire's frames to the session
//! through [`rhizome_actors::Peer::attach_link`], so the sync code cannot
//! tell one link from another (the simulator's modelled links feed the same
//! session actor in process).
//!
//! - [`quic`]: QUIC on a LAN (quinn), TLS 1.3 with mutual authentication
//!   and admission by an app key. Built only without `--cfg madsim`: the
//!   simulator has no real UDP sockets, and quinn's tokio runtime needs
//!   them.
//!
//! - [`discovery`]: DNS-SD over mDNS finds the app's other peers and
//!   dials them, on a LAN or on one peer-to-peer Wi-Fi interface (QUIC over
//!   IPv6 link-local addresses with the interface as scope). Also built
//!   only without `--cfg madsim`.
//!
//! - [`planned`]: links made on the connection planner's decisions, so a
//!   peer holds a bounded number of sessions per link kind and rotates
//!   them; discovery reports to it instead of dialling.
//!
//! - `ble` (feature `ble`, Linux): Bluetooth LE, central role with
//!   btleplug, peripheral role with bluer, frames cut into the chunks of
//!   `rhizome_engine::sync::chunk` (the framing the simulator's modelled
//!   links use). Admitted by the app key and encrypted by [`ble_auth`]
//!   (pure code, built and tested without the feature).

use rhizome_actors::{LinkKind, PeerId};
use std::future::Future;

#[cfg(not(madsim))]
pub mod discovery;
#[cfg(not(madsim))]
pub mod planned;
#[cfg(not(madsim))]
pub mod quic;

#[cfg(all(feature = "ble", target_os = "linux", not(madsim)))]
pub mod ble;
#[cfg(not(madsim))]
pub mod ble_auth;

/// A source of links of one kind for one peer: it dials, accepts and
/// authenticates remotes, and runs a sync session on each link through
/// [`rhizome_actors::Peer::attach_link`].
pub trait Transport {
    /// The kind of the links it makes (shown in presence).
    fn kind(&self) -> LinkKind;

    /// The remote peers it has a link with now, in peer id order.
    fn linked_peers(&self) -> Vec<PeerId>;

    /// Closes every link and stops making new ones.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
