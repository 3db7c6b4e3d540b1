//! Version vectors: what a replica has seen, per origin peer.
//!
//! The sequence of a peer is its hybrid logical clock: every write a peer
//! originates carries a strictly larger HLC than its previous one, so "seen up
//! to HLC h of peer P" is a cumulative claim, provided each origin's changes
//! are delivered in order (the sync protocol guarantees that).

use crate::hlc::{Hlc, PeerId, Stamp};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub mod packed;

/// Per origin peer, the greatest HLC seen from it.
///
/// Entries sit in a vector sorted by peer, with no `Hlc::ZERO` entry: sync
/// clones, joins and compares vectors on every message, and a merge walk
/// over two sorted runs (one allocation per clone) is several times cheaper
/// than the same over a tree. Serialized as a map, peer to HLC, in
/// human-readable formats (JSON), and as the bytes of its [`packed`]
/// encoding in binary ones (postcard: the sync protocol, change records).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(Vec<(PeerId, Hlc)>);

impl VersionVector {
    /// Nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, peer: PeerId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&peer, |&(p, _)| p)
    }

    /// The greatest HLC seen from `peer` (`Hlc::ZERO` if none).
    pub fn get(&self, peer: PeerId) -> Hlc {
        self.find(peer).map_or(Hlc::ZERO, |i| self.0[i].1)
    }

    /// Whether the write `stamp` is included.
    pub fn covers(&self, stamp: Stamp) -> bool {
        stamp.hlc != Hlc::ZERO && self.get(stamp.peer) >= stamp.hlc
    }

    /// Records `stamp` as seen; returns whether that advanced the vector.
    pub fn observe(&mut self, stamp: Stamp) -> bool {
        if stamp.hlc == Hlc::ZERO {
            return false;
        }
        match self.find(stamp.peer) {
            Ok(i) if self.0[i].1 >= stamp.hlc => false,
            Ok(i) => {
                self.0[i].1 = stamp.hlc;
                true
            }
            Err(i) => {
                self.0.insert(i, (stamp.peer, stamp.hlc));
                true
            }
        }
    }

    /// Sets the entry of `peer` to `hlc`, lower or higher (`Hlc::ZERO`
    /// removes it).
    pub fn set(&mut self, peer: PeerId, hlc: Hlc) {
        match (self.find(peer), hlc == Hlc::ZERO) {
            (Ok(i), true) => {
                self.0.remove(i);
            }
            (Ok(i), false) => self.0[i].1 = hlc,
            (Err(_), true) => {}
            (Err(i), false) => self.0.insert(i, (peer, hlc)),
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        // In place when `other` adds no peer (the common case: vectors of
        // one session share their origins); else one merge walk.
        let mut missing = false;
        let mut i = 0;
        for &(p, h) in &other.0 {
            while i < self.0.len() && self.0[i].0 < p {
                i += 1;
            }
            match self.0.get_mut(i) {
                Some(e) if e.0 == p => e.1 = e.1.max(h),
                _ => missing = true,
            }
        }
        if missing {
            self.0 = merge(&self.0, &other.0);
        }
    }

    /// Whether every entry of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        let mut i = 0;
        other.0.iter().all(|&(p, h)| {
            while i < self.0.len() && self.0[i].0 < p {
                i += 1;
            }
            self.0.get(i).is_some_and(|e| e.0 == p && e.1 >= h)
        })
    }

    /// A 64-bit digest of the entries, never 0 (0 means "no vector" on the
    /// wire). Equal vectors have equal digests on every peer; unequal ones
    /// collide with a chance of about 2^-64. Only used to skip sending a
    /// vector the other side already announced (see `Hello::vv_digest`),
    /// where a collision costs at most that one round's completeness, so
    /// a fast non-cryptographic mix is enough.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ self.0.len() as u64;
        for &(p, hlc) in &self.0 {
            h = mix(h ^ p.0);
            h = mix(h ^ hlc.0);
        }
        h.max(1)
    }

    /// The entries of `self` ahead of `base` (what grew past it).
    pub fn grown_past(&self, base: &VersionVector) -> VersionVector {
        VersionVector(self.0.iter().copied().filter(|&(p, h)| h > base.get(p)).collect())
    }

    /// Entries in peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, Hlc)> + '_ {
        self.0.iter().copied()
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

/// The pointwise maximum of two sorted runs.
fn merge(a: &[(PeerId, Hlc)], b: &[(PeerId, Hlc)]) -> Vec<(PeerId, Hlc)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1.max(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(&packed::encode(self));
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (peer, hlc) in &self.0 {
            map.serialize_entry(peer, hlc)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Packed;
        impl<'de> Visitor<'de> for Packed {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a packed version vector")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<VersionVector, E> {
                packed::decode(bytes).map_err(E::custom)
            }
        }
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_bytes(Packed);
        }
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of peer to HLC")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VersionVector, A::Error> {
                // Bytes from the network: the length hint is not trusted
                // for allocation, and any order or repeat is joined.
                let mut entries: Vec<(PeerId, Hlc)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some((peer, hlc)) = map.next_entry::<PeerId, Hlc>()? {
                    if hlc != Hlc::ZERO {
                        entries.push((peer, hlc));
                    }
                }
                let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
                if sorted {
                    return Ok(VersionVector(entries));
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl FromIterator<(PeerId, Hlc)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (PeerId, Hlc)>>(iter: I) -> Self {
        // Sort once (not an insertion per entry: untrusted input may be
        // long and in any order), then keep each peer's greatest HLC.
        let mut entries: Vec<(PeerId, Hlc)> = iter.into_iter().filter(|&(_, h)| h != Hlc::ZERO).collect();
        entries.sort_unstable();
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.max(later.1);
            }
            same
        });
        VersionVector(entries)
    }
}

/// splitmix64's finalizer: every input bit moves about half the output bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
