//! Actor toolkit and the small peer's subsystem actors.
//!
//! Not built yet: this crate is laid out now so the workspace has its final
//! shape; issue 4 fills it.
