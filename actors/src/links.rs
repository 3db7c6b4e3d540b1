//! The link manager: the links one sync session has to its remote peer.
//!
//! A peer may reach another over several links at once (a LAN and
//! Bluetooth LE, say). Rather than a session per link, which would sync the
//! same changes twice and lose its state with its link, each remote peer
//! has one session, and [`Peer::attach_link`](crate::Peer::attach_link)
//! adds every transport link to that peer to the session's [`Links`]:
//!
//! - **Outbound** frames go on the best live link: links are ranked by
//!   kind ([`speed_rank`]: in-process, LAN, peer-to-peer Wi-Fi, cloud, BLE),
//!   then by age (the older first, so two links of one kind do not take
//!   turns). A full best link holds frames back (the session's outbox keeps
//!   them) rather than spilling them onto a slower one, which would reorder
//!   them for nothing.
//! - **Inbound** frames are taken from any link of the set.
//! - **A link leaves** when its handle is dropped or closed, when its
//!   outbound channel is found closed (the transport saw it go down), or
//!   when the session ends. The session then carries on over the next
//!   link, and its engine is told (`handle_link_changed`), so what was in
//!   flight on the dead link is asked again at once instead of after a
//!   stall. The same is done when a better link takes over, since frames
//!   on the new link may overtake those still on the old one.
//! - **The session ends with its last link.** The set is marked ended
//!   under the same lock that adds links, so a link attached at that
//!   moment either joins the live session or starts a fresh one, never a
//!   session that is going away.
//!
//! Ranking is by kind alone: both ends rank the same way, so both move
//! together, and a measured rate would need traffic to measure (a standby
//! link carries none).

use crate::actor::WeakAddr;
use crate::latest;
use crate::presence::{Link, LinkKind, PresenceActor, PresenceMsg};
use crate::session::{SessionActor, SessionMsg};
use rhizome_engine::hlc::PeerId;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// How fast a kind of link usually is (higher: preferred).
pub(crate) fn speed_rank(kind: LinkKind) -> u8 {
    match kind {
        LinkKind::InProcess => 5,
        LinkKind::Lan => 4,
        LinkKind::P2pWifi => 3,
        LinkKind::Cloud => 2,
        LinkKind::Ble => 1,
    }
}

/// One link of the set.
struct Entry {
    link: Link,
    frames: mpsc::Sender<Vec<u8>>,
    /// Dropped when the link leaves the set: its handle and its watcher
    /// see the channel close.
    _present: latest::Sender<()>,
}

#[derive(Default)]
struct State {
    /// Best first.
    links: Vec<Entry>,
    /// The last link left, or the session ended: no link joins any more.
    ended: bool,
    /// The best link changed, or a link left, since the session last
    /// looked.
    changed: bool,
}

/// What became of a frame offered to the set.
pub(crate) enum Offered {
    /// It is on the best live link.
    Taken,
    /// The best live link is full: try again later.
    Full(Vec<u8>),
    /// No link is left: the session is over.
    Gone,
}

/// A session's links to its remote (see the module doc).
#[derive(Default)]
pub(crate) struct Links {
    state: Mutex<State>,
}

/// Tells, when it closes, that a link left its set.
pub(crate) type Presence = latest::Receiver<()>;

impl Links {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few assignments.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a link; gives its channel back if the set has ended (the
    /// caller then starts a fresh session).
    pub(crate) fn add(&self, link: Link, frames: mpsc::Sender<Vec<u8>>) -> Result<Presence, mpsc::Sender<Vec<u8>>> {
        let mut s = self.lock();
        if s.ended {
            return Err(frames);
        }
        let rank = speed_rank(link.kind);
        let at = s.links.partition_point(|e| speed_rank(e.link.kind) >= rank);
        if at == 0 && !s.links.is_empty() {
            s.changed = true;
        }
        let (present, rx) = latest::channel(());
        s.links.insert(
            at,
            Entry {
                link,
                frames,
                _present: present,
            },
        );
        Ok(rx)
    }

    /// Removes a link (no effect if it already left); the set ends with
    /// its last link.
    pub(crate) fn remove(&self, id: u64) {
        let mut s = self.lock();
        let before = s.links.len();
        s.links.retain(|e| e.link.id != id);
        if s.links.len() != before {
            s.changed = true;
            s.ended |= s.links.is_empty();
        }
    }

    /// Puts `frame` on the best live link; links found closed on the way
    /// leave the set.
    pub(crate) fn try_send(&self, frame: Vec<u8>) -> Offered {
        let mut s = self.lock();
        let mut frame = frame;
        // Bounded: every pass sends, stops, or removes a link.
        while let Some(best) = s.links.first() {
            match best.frames.try_send(frame) {
                Ok(()) => return Offered::Taken,
                Err(mpsc::error::TrySendError::Full(f)) => return Offered::Full(f),
                Err(mpsc::error::TrySendError::Closed(f)) => {
                    frame = f;
                    s.links.remove(0);
                    s.changed = true;
                }
            }
        }
        s.ended = true;
        Offered::Gone
    }

    /// Whether the links changed since the last call (see
    /// [`State::changed`]).
    pub(crate) fn take_changed(&self) -> bool {
        std::mem::take(&mut self.lock().changed)
    }

    /// Whether the set has ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Whether link `id` is in the set.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.lock().links.iter().any(|e| e.link.id == id)
    }

    /// The link frames go on now.
    pub(crate) fn active(&self) -> Option<Link> {
        self.lock().links.first().map(|e| e.link.clone())
    }

    /// Ends the set: every link leaves (their transports see the channels
    /// close) and none joins any more.
    pub(crate) fn end(&self) {
        let gone = {
            let mut s = self.lock();
            s.ended = true;
            std::mem::take(&mut s.links)
        };
        // Dropped outside the lock: dropping wakes the watchers.
        drop(gone);
    }
}

/// What a link's watcher tells when the link comes and goes.
pub(crate) struct Watch {
    pub(crate) links: Arc<Links>,
    pub(crate) link: Link,
    pub(crate) remote: PeerId,
    pub(crate) session: WeakAddr<SessionActor>,
    pub(crate) presence: WeakAddr<PresenceActor>,
}

/// Watches one link while it is in the set: shows it in the presence
/// graph, and removes it when its handle is dropped (`dropped`) or its
/// outbound channel closes (`frames`, a clone held only while the link is
/// in the set), then tells the session its links changed.
pub(crate) fn watch(w: Watch, frames: mpsc::Sender<Vec<u8>>, mut present: Presence, dropped: oneshot::Receiver<()>) {
    tokio::spawn(async move {
        if let Some(p) = w.presence.upgrade() {
            let _ = p
                .tell(PresenceMsg::LinkUp {
                    peer: w.remote,
                    link: w.link.clone(),
                })
                .await;
        }
        // `biased`: no random branch order (the simulator must replay).
        tokio::select! {
            biased;
            _ = dropped => {}
            () = frames.closed() => {}
            _ = present.changed() => {}
        }
        drop(frames);
        w.links.remove(w.link.id);
        if let Some(p) = w.presence.upgrade() {
            let _ = p
                .tell(PresenceMsg::LinkDown {
                    peer: w.remote,
                    link_id: w.link.id,
                })
                .await;
        }
        if let Some(s) = w.session.upgrade() {
            let _ = s.tell(SessionMsg::LinksChanged).await;
        }
    });
}
