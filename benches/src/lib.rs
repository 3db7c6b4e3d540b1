//! Benchmarks (binaries under src/bin).
