//! Examples embedding Rhizome.
