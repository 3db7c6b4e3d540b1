//! The presence actor: who this peer is connected to, and over which links.
//!
//! Link actors (one per transport link, from the transport issues) and sync
//! sessions tell it [`PresenceMsg::LinkUp`] and [`PresenceMsg::LinkDown`];
//! it keeps the graph and publishes every new version on a latest-value channel,
//! so readers see the latest graph and a slow reader skips versions instead
//! of queueing them. The graph is soft state: after a restart it starts from
//! the last published version, and links re-announce themselves.

use crate::actor::{Actor, Ctx};
use crate::latest;
use rhizome_engine::hlc::PeerId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The kind of a link between two peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LinkKind {
    /// Two peers in one process (tests, simulations, app extensions).
    InProcess,
    /// QUIC on a LAN.
    Lan,
    /// Peer-to-peer Wi-Fi (AWDL, Wi-Fi Direct, Wi-Fi Aware).
    P2pWifi,
    /// Bluetooth LE.
    Ble,
    /// The big peer (cloud).
    Cloud,
}

/// One live link to a remote peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Identifies the link on this peer.
    pub id: u64,
    /// Its kind.
    pub kind: LinkKind,
}

/// What this peer knows of the mesh: its direct neighbours and their links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceGraph {
    /// This peer.
    pub me: PeerId,
    /// Connected peers, with their live links (at least one each).
    pub peers: BTreeMap<PeerId, Vec<Link>>,
    /// Bumped on every change.
    pub version: u64,
}

/// Messages of the presence actor.
pub(crate) enum PresenceMsg {
    /// A link to `peer` came up.
    LinkUp { peer: PeerId, link: Link },
    /// A link to `peer` went down.
    LinkDown { peer: PeerId, link_id: u64 },
}

/// The presence actor's state: the publishing end of the graph.
pub(crate) struct PresenceActor {
    graph: Arc<latest::Sender<PresenceGraph>>,
}

impl PresenceActor {
    pub(crate) fn new(graph: Arc<latest::Sender<PresenceGraph>>) -> PresenceActor {
        PresenceActor { graph }
    }
}

impl Actor for PresenceActor {
    type Msg = PresenceMsg;

    async fn handle(&mut self, msg: PresenceMsg, _ctx: &mut Ctx<Self>) {
        self.graph.send_if_modified(|g| {
            let changed = match msg {
                PresenceMsg::LinkUp { peer, link } => {
                    let links = g.peers.entry(peer).or_default();
                    let fresh = !links.iter().any(|l| l.id == link.id);
                    if fresh {
                        links.push(link);
                    }
                    fresh
                }
                PresenceMsg::LinkDown { peer, link_id } => {
                    let Some(links) = g.peers.get_mut(&peer) else {
                        return false;
                    };
                    let before = links.len();
                    links.retain(|l| l.id != link_id);
                    let changed = links.len() != before;
                    if links.is_empty() {
                        g.peers.remove(&peer);
                    }
                    changed
                }
            };
            if changed {
                g.version += 1;
            }
            changed
        });
    }
}
