//! Fuzzes the sync protocol's decoders: frames, the packed changes and the
//! subscriptions inside them, and chunks reassembled at the MTU given by
//! the first byte. Any input must give a message or an error, never a
//! panic, and whatever decodes must re-encode to a frame that decodes to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rhizome_engine::sync::pack::{self, UnpackLimits};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::wire::{chunks, decode, encode, Hello, Message, Reassembler};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok((version, msg)) = decode(data, LIMIT) {
        // Compared as bytes, not values: a float's bits are kept.
        let again = encode(&msg, version);
        let (_, msg2) = decode(&again, LIMIT).expect("a re-encoded frame decodes");
        assert_eq!(encode(&msg2, version), again);
        // What a session does next with a hostile message's contents.
        match &msg {
            Message::Changes { changes, .. } => {
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
    // Chunking any bytes and reassembling gives them back.
    let mut r = Reassembler::new(LIMIT);
    let parts = chunks(rest, usize::from(mtu));
    let mut out = None;
    for p in &parts {
        match r.push(p) {
            Ok(Some(frame)) => out = Some(frame),
            Ok(None) => {}
            // Reassembly checks frame headers as they arrive; arbitrary bytes
            // are rarely a frame.
            Err(_) => return,
        }
    }
    assert_eq!(out.as_deref(), Some(rest));
});
