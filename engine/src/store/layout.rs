//! Key layout of the store's tables, and the id index's hashing.
//!
//! All integers are big-endian so keys sort numerically:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format`, `peer`, `hlc`, `vv` + `vv_own`, `reaped`, `log_heads` + `log_heads_own`, `next_doc`, `next_coll`, `idkey`, `ids_recent`, `ids_cursor` | the record (version vectors packed: `vv::packed`) |
//! | `meta` | `c/` + name / `n/` + collection id | collection id / name |
//! | `docs` | collection id (4) + document number (8) | stored document (`codec`) |
//! | `ids`  | level (1) + collection id (4) + SipHash-1-3 of the encoded `_id` (8) | document numbers (varints) |
//! | `log`  | origin peer (8) + HLC (8) + collection id (4) + document number (8) | empty |
//!
//! The id index holds a keyed 64-bit hash instead of the id: entries are a
//! third the size, so the B-tree that random ids land in all over has a third
//! fewer pages to dirty per commit. The hash key is random per store (an
//! attacker cannot aim ids at one bucket), and a bucket lists every document
//! number whose id hashes there; lookups confirm the id in the record.
//!
//! The index has two levels in one table, told apart by a prefix byte, like a
//! two-level LSM tree: new entries go to the small *recent* level, whose few
//! pages absorb a commit's random inserts, and when it holds
//! [`RECENT_MAX`] entries its next slice (a [`MERGE_SLICES`]th, after a
//! rotating cursor) is merged into the *main* level in one sorted pass
//! (more slices, until it holds fewer, after a commit larger than one), so
//! each main page is rewritten once per merge instead of once per commit,
//! and a merge frees only a slice of the main level's pages (LMDB reuses
//! them two commits later; the file grows by what a commit frees). Lookups read the main level first, and the recent one only when
//! the main one has no record carrying the id (most documents are in the
//! main level, so a hit costs one index read).

use crate::hlc::{Hlc, PeerId};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

pub(super) const META_FORMAT: &[u8] = b"format";
pub(super) const META_PEER: &[u8] = b"peer";
pub(super) const META_HLC: &[u8] = b"hlc";
/// The version vector's entries of every origin but this store, packed
/// (`vv::packed`); this store's own entry is kept apart under
/// [`META_VV_OWN`] (an HLC, 8 bytes), so that a local commit rewrites 8
/// bytes instead of repacking a vector of thousands of origins.
pub(super) const META_VV: &[u8] = b"vv";
/// This store's own entry of the version vector (absent: none).
pub(super) const META_VV_OWN: &[u8] = b"vv_own";
/// Version vectors of every document reaped after its deletion, joined.
pub(super) const META_REAPED: &[u8] = b"reaped";
/// Per origin, the newest HLC with an entry in the change log (an upper
/// bound: entries may have gone since). Serving visits only the origins
/// whose head is past the asker's vector; derived data, rebuilt on open
/// when missing.
pub(super) const META_LOG_HEADS: &[u8] = b"log_heads";
/// This store's own entry of the change log's heads, kept apart like
/// [`META_VV_OWN`].
pub(super) const META_LOG_HEADS_OWN: &[u8] = b"log_heads_own";
pub(super) const META_NEXT_DOC: &[u8] = b"next_doc";
pub(super) const META_NEXT_COLL: &[u8] = b"next_coll";
pub(super) const META_ID_KEY: &[u8] = b"idkey";
pub(super) const META_IDS_RECENT: &[u8] = b"ids_recent";
/// Where the next merge of the id index's recent level starts: a key of
/// that level (absent: its start).
pub(super) const META_IDS_CURSOR: &[u8] = b"ids_cursor";

/// Prefix of the id index's small, write-absorbing level.
pub(super) const LEVEL_RECENT: u8 = 0;
/// Prefix of the id index's main level.
pub(super) const LEVEL_MAIN: u8 = 1;
/// Entries the recent level takes before it is merged into the main one.
pub(super) const RECENT_MAX: u64 = 8_192;
/// A merge moves `RECENT_MAX / MERGE_SLICES` buckets of the recent level:
/// the next slice of the hash space after [`META_IDS_CURSOR`].
pub(super) const MERGE_SLICES: u64 = 4;

pub(super) fn coll_key(name: &str) -> Vec<u8> {
    [b"c/".as_slice(), name.as_bytes()].concat()
}

pub(super) fn coll_name_key(coll: u32) -> Vec<u8> {
    [b"n/".as_slice(), &coll.to_be_bytes()].concat()
}

pub(super) fn doc_key(coll: u32, num: u64) -> [u8; 12] {
    let mut k = [0; 12];
    k[..4].copy_from_slice(&coll.to_be_bytes());
    k[4..].copy_from_slice(&num.to_be_bytes());
    k
}

pub(super) fn log_key(peer: PeerId, hlc: Hlc, coll: u32, num: u64) -> [u8; 28] {
    let mut k = [0; 28];
    k[..8].copy_from_slice(&peer.0.to_be_bytes());
    k[8..16].copy_from_slice(&hlc.0.to_be_bytes());
    k[16..20].copy_from_slice(&coll.to_be_bytes());
    k[20..].copy_from_slice(&num.to_be_bytes());
    k
}

pub(super) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub(super) fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The store's keyed hash of encoded ids.
#[derive(Clone, Copy, Debug)]
pub(super) struct IdHasher {
    k0: u64,
    k1: u64,
}

impl IdHasher {
    pub(super) fn from_bytes(b: &[u8]) -> Option<IdHasher> {
        Some(IdHasher {
            k0: be_u64(b)?,
            k1: be_u64(b.get(8..)?)?,
        })
    }

    pub(super) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.k0.to_be_bytes());
        b[8..].copy_from_slice(&self.k1.to_be_bytes());
        b
    }

    pub(super) fn new(k0: u64, k1: u64) -> IdHasher {
        IdHasher { k0, k1 }
    }

    /// Key of the id index bucket for an encoded id, in one level.
    pub(super) fn key(&self, level: u8, coll: u32, id_bytes: &[u8]) -> [u8; 13] {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(id_bytes);
        let mut k = [0; 13];
        k[0] = level;
        k[1..5].copy_from_slice(&coll.to_be_bytes());
        k[5..].copy_from_slice(&h.finish().to_be_bytes());
        k
    }
}

/// Document numbers of one id-index bucket, as LEB128 varints.
pub(super) fn bucket_nums(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let mut v = 0u64;
        for (i, &b) in rest.iter().enumerate().take(10) {
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                rest = &rest[i + 1..];
                return Some(v);
            }
        }
        None
    })
}

pub(super) fn bucket_push(bytes: &mut Vec<u8>, mut num: u64) {
    while num >= 0x80 {
        bytes.push((num as u8) | 0x80);
        num >>= 7;
    }
    bytes.push(num as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip() {
        let mut b = Vec::new();
        for n in [1u64, 127, 128, 300_000, u64::MAX] {
            bucket_push(&mut b, n);
        }
        assert_eq!(
            bucket_nums(&b).collect::<Vec<_>>(),
            vec![1, 127, 128, 300_000, u64::MAX]
        );
        assert_eq!(bucket_nums(&[0x80]).count(), 0, "a truncated varint ends the bucket");
    }
}
