//! Fuzzes the sync protocol's decoders: frames, the packed changes and the
//! subscriptions inside them, and chunks reassembled at the MTU given by
//! the first byte. Any input must give a message or an error, never a
//! panic, and whatever decodes must re-encode to a frame that decodes to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rhizome_engine::sync::pack::{self, UnpackLimits};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::chunk::{Chunker, Reassembler, MIN_CHUNK_BYTES};
use rhizome_engine::sync::wire::{decode, encode, Hello, Message};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok((version, msg)) = decode(data, LIMIT) {
        // Compared as bytes, not values: a float's bits are kept.
        let again = encode(&msg, version);
        let (_, msg2) = decode(&again, LIMIT).expect("a re-encoded frame decodes");
        assert_eq!(encode(&msg2, version), again);
        // What a session does next with a hostile message's contents.
        match &msg {
            Message::Changes { changes, .. } | Message::Push { changes, .. } => {
                let limits = UnpackLimits {
                    max_body_bytes: 16 * LIMIT,
                    ..UnpackLimits::default()
                };
                if let Ok(changes) = pack::unpack(changes, limits) {
                    // Whatever unpacks packs again into a pack that unpacks.
                    let again = pack::pack(&changes);
                    assert!(pack::unpack(&again, UnpackLimits::default()).is_ok());
                }
            }
            Message::Hello(Hello { subscriptions, .. }) | Message::Subscribe { subscriptions } => {
                let _ = Interest::compile(subscriptions);
            }
            _ => {}
        }
    }
    let Some((&mtu, rest)) = data.split_first() else { return };
    let mut r = Reassembler::new(LIMIT);
    for piece in rest.chunks(usize::from(mtu).max(1)) {
        if let Ok(Some(frame)) = r.push(piece) {
            let _ = decode(&frame, LIMIT);
        }
    }
    // Chunking any bytes (within the limit) and reassembling gives them
    // back, exactly.
    if rest.len() > LIMIT {
        return;
    }
    let mut r = Reassembler::new(LIMIT);
    let Ok(parts) = Chunker::new().split(rest, usize::from(mtu).max(MIN_CHUNK_BYTES)) else { return };
    let mut out = None;
    for p in parts {
        if let Some(frame) = r.push(&p).expect("in-order chunks reassemble") {
            out = Some(frame);
        }
    }
    assert_eq!(out.as_deref(), Some(rest));
});
