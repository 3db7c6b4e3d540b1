//! Real links (QUIC, peer-to-peer Wi-Fi, Bluetooth LE) behind one transport trait.
//!
//! Not built yet: issue 6 fills it.
