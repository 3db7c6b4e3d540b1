//! DQL: the SQL-like query language of Rhizome, over JSON documents.
//!
//! Text is parsed once into a [`ast::Statement`] (prepared statements are
//! cached by text), expressions are evaluated by `eval` with a missing value
//! distinct from null, and statements run against a store transaction. The
//! whole module is pure: the store comes in as a transaction.

pub mod ast;
