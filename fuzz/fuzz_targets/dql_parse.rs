//! Fuzzes the DQL parser with arbitrary UTF-8 text.
//!
//! Statements arrive from apps and peers, so the parser must answer every
//! input with a tree or a positioned error: never a panic, a stack overflow
//! or a hang (libFuzzer reports all three). Non-UTF-8 inputs are skipped, as
//! the parser only ever receives `&str`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rhizome_engine::dql::parse::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        // Parsing is a pure function of the text: a second parse agrees, and
        // the prepare-time checks answer too (never a panic).
        Ok(statement) => {
            let _ = rhizome_engine::dql::eval::check(&statement);
            assert_eq!(parse(text).ok(), Some(statement));
        }
        Err(e) => {
            assert!(e.pos.line >= 1 && e.pos.column >= 1, "{e}");
            assert!(!e.expected.is_empty() && !e.found.is_empty(), "{e}");
        }
    }
});
