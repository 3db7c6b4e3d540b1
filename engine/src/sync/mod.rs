//! The sync protocol, as pure code: its wire format ([`wire`]), the chunks
//! frames are cut into on links with small packets ([`chunk`]), and one
//! session as a sans-IO state machine ([`session`]). The session actor
//! drives it over a link; tests and the simulator drive it directly.

pub mod chunk;
pub mod conns;
pub mod pack;
pub mod scope;
pub mod session;
pub mod wire;
