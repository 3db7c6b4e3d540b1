//! Real links made on the connection planner's decisions.
//!
//! The planner ([`ConnDriver`], around the engine's sans-IO `ConnPlanner`)
//! bounds the sessions a peer holds per link kind (by default 4 on a LAN,
//! 4 over peer-to-peer Wi-Fi) and rotates one now and then so peers not met
//! yet get a turn; the simulator's switchboard executes its decisions for
//! virtual links, and a [`LinkPlanner`] does it for QUIC transports.
//! Discovery reports the peers it finds ([`LinkPlanner::found`],
//! [`LinkPlanner::lost`]) instead of dialling them; the planner's `Connect`
//! becomes a [`QuicTransport::dial`] of the address found, its `Disconnect`
//! drops that dial and closes the link; the transports report links up and
//! down and ask before taking an incoming one (the [`Admission`] trait).
//!
//! Static addresses (`--connect`) are not planned: the user named them, so
//! they are always dialled. Their links still count in the plan, and the
//! planner may close others to make room.
//!
//! Bounds: one route and at most one dial per (peer, kind) found, and
//! discovery bounds the peers it reports; decisions wait in the driver's
//! bounded queue.

use crate::quic::{Admission, Dial, QuicTransport};
use crate::Transport;
use rhizome_actors::conns::{ConnDriver, Decision};
use rhizome_actors::{LinkKind, PeerId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Where a found peer is reached.
struct Route {
    transport: Weak<QuicTransport>,
    addr: SocketAddr,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<(PeerId, LinkKind), Route>,
    dials: BTreeMap<(PeerId, LinkKind), Dial>,
    transports: Vec<Weak<QuicTransport>>,
}

/// The executor of one peer's connection plan over its QUIC transports
/// (see the module doc). Its task ends when it is dropped or the driver
/// stops.
pub struct LinkPlanner {
    driver: ConnDriver,
    state: Mutex<State>,
}

impl std::fmt::Debug for LinkPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkPlanner")
            .field("me", &self.driver.me())
            .finish_non_exhaustive()
    }
}

impl LinkPlanner {
    /// Executes `driver`'s decisions from now on. Must be called inside a
    /// tokio runtime.
    pub fn start(driver: ConnDriver) -> Arc<LinkPlanner> {
        let planner = Arc::new(LinkPlanner {
            driver,
            state: Mutex::default(),
        });
        tokio::spawn(execute(Arc::downgrade(&planner), planner.driver.clone()));
        planner
    }

    /// The driver whose decisions it executes.
    pub fn driver(&self) -> &ConnDriver {
        &self.driver
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a transport whose links the planner may close (those found
    /// through it are added by [`LinkPlanner::found`]).
    pub fn add_transport(&self, transport: &Arc<QuicTransport>) {
        let mut s = self.state();
        s.transports.retain(|t| t.strong_count() > 0);
        if !s.transports.iter().any(|t| t.ptr_eq(&Arc::downgrade(transport))) {
            s.transports.push(Arc::downgrade(transport));
        }
    }

    /// `peer` was found at `addr`, reachable through `transport`.
    pub fn found(&self, peer: PeerId, transport: &Arc<QuicTransport>, addr: SocketAddr) {
        self.add_transport(transport);
        let kind = transport.kind();
        self.state().routes.insert(
            (peer, kind),
            Route {
                transport: Arc::downgrade(transport),
                addr,
            },
        );
        // Only a stopped driver refuses, and then nothing is planned.
        let _ = self.driver.discovered(peer, kind);
    }

    /// `peer` is no longer found over `kind`.
    pub fn lost(&self, peer: PeerId, kind: LinkKind) {
        self.state().routes.remove(&(peer, kind));
        let _ = self.driver.lost(peer, kind);
    }

    /// Carries out one decision.
    fn apply(&self, decision: Decision) {
        match decision {
            Decision::Connect { peer, kind } => self.connect(peer, kind),
            Decision::Disconnect { peer, kind, .. } => self.disconnect(peer, kind),
        }
    }

    fn connect(&self, peer: PeerId, kind: LinkKind) {
        let dial = {
            let mut s = self.state();
            let route = s
                .routes
                .get(&(peer, kind))
                .and_then(|r| Some((r.transport.upgrade()?, r.addr)));
            route.map(|(transport, addr)| {
                let dial = transport.dial(addr);
                s.dials.insert((peer, kind), dial);
            })
        };
        if dial.is_none() {
            // Lost meanwhile: the dial failed at once.
            let _ = self.driver.disconnected(peer, kind);
        }
    }

    fn disconnect(&self, peer: PeerId, kind: LinkKind) {
        let transports: Vec<Arc<QuicTransport>> = {
            let mut s = self.state();
            s.dials.remove(&(peer, kind));
            s.transports.iter().filter_map(Weak::upgrade).collect()
        };
        for t in transports.iter().filter(|t| t.kind() == kind) {
            t.disconnect(peer);
        }
    }
}

impl Drop for LinkPlanner {
    fn drop(&mut self) {
        // Ends the task, which holds a clone of the driver.
        self.driver.stop();
    }
}

impl Admission for LinkPlanner {
    fn would_accept(&self, remote: PeerId, kind: LinkKind) -> bool {
        // An unplanned kind, or a driver stopped while the peer closes:
        // nothing to bound.
        self.driver.would_accept(remote, kind).unwrap_or(true)
    }

    fn up(&self, remote: PeerId, kind: LinkKind) {
        let _ = self.driver.connected(remote, kind);
    }

    fn down(&self, remote: PeerId, kind: LinkKind) {
        // The plan decides whether to dial again; the dial's own redialling
        // would not ask it.
        self.state().dials.remove(&(remote, kind));
        let _ = self.driver.disconnected(remote, kind);
    }
}

/// Takes the driver's decisions until it stops or the planner is dropped.
async fn execute(planner: Weak<LinkPlanner>, driver: ConnDriver) {
    // Bounded by the driver: each pass takes one decision or ends.
    while let Some(decision) = driver.next_decision().await {
        let Some(planner) = planner.upgrade() else {
            return;
        };
        tracing::debug!(me = %driver.me(), ?decision, "connection plan");
        planner.apply(decision);
    }
}
