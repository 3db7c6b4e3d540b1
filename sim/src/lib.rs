//! Deterministic simulator of Rhizome meshes under madsim.
//!
//! Not built yet: issue 5 fills it.
