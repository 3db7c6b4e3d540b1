//! Example apps embedding Rhizome; each is an `[[example]]` of this package
//! (`cargo run --example tasks`).
