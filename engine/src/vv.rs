//! Version vectors: what a replica has seen, per origin peer.
//!
//! The sequence of a peer is its hybrid logical clock: every write a peer
//! originates carries a strictly larger HLC than its previous one, so "seen up
//! to HLC h of peer P" is a cumulative claim, provided each origin's changes
//! are delivered in order (the sync protocol guarantees that).

use crate::hlc::{Hlc, PeerId, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per origin peer, the greatest HLC seen from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<PeerId, Hlc>);

impl VersionVector {
    /// Nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The greatest HLC seen from `peer` (`Hlc::ZERO` if none).
    pub fn get(&self, peer: PeerId) -> Hlc {
        self.0.get(&peer).copied().unwrap_or(Hlc::ZERO)
    }

    /// Whether the write `stamp` is included.
    pub fn covers(&self, stamp: Stamp) -> bool {
        stamp.hlc != Hlc::ZERO && self.get(stamp.peer) >= stamp.hlc
    }

    /// Records `stamp` as seen; returns whether that advanced the vector.
    pub fn observe(&mut self, stamp: Stamp) -> bool {
        let e = self.0.entry(stamp.peer).or_insert(Hlc::ZERO);
        if stamp.hlc > *e {
            *e = stamp.hlc;
            true
        } else {
            false
        }
    }

    /// Sets the entry of `peer` to `hlc`, lower or higher (`Hlc::ZERO`
    /// removes it).
    pub fn set(&mut self, peer: PeerId, hlc: Hlc) {
        match hlc == Hlc::ZERO {
            true => self.0.remove(&peer),
            false => self.0.insert(peer, hlc),
        };
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (&peer, &hlc) in &other.0 {
            self.observe(Stamp { hlc, peer });
        }
    }

    /// Whether every entry of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&p, &h)| self.get(p) >= h)
    }

    /// Entries in peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, Hlc)> + '_ {
        self.0.iter().map(|(&p, &h)| (p, h))
    }

    /// Number of peers with an entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(PeerId, Hlc)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (PeerId, Hlc)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (peer, hlc) in iter {
            vv.observe(Stamp { hlc, peer });
        }
        vv
    }
}
