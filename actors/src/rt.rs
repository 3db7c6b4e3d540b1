//! Time and entropy for the engine, taken from the runtime: the real clock
//! and OS randomness in an app, madsim's virtual ones in the simulator
//! (madsim intercepts `clock_gettime`; entropy is drawn from its generator
//! explicitly, see `entropy`).

/// Milliseconds since the Unix epoch (the HLC's physical part).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 64 random bits. If the OS has no entropy to give, the clock stands in:
/// ids stay unique per store, only less unpredictable.
#[cfg(not(madsim))]
pub fn entropy() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_ms().rotate_left(29) ^ u64::from(std::process::id()))
}

/// 64 random bits from the simulator's seeded generator.
#[cfg(madsim)]
pub fn entropy() -> u64 {
    madsim::rand::random()
}
