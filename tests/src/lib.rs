//! # cadre-tests
//!
//! Integration tests across cadre's crates, under `tests/`: supervision trees spanning
//! several arbiters now; in-process and multi-process clusters with fault injection as the
//! cluster features arrive.

#![deny(missing_docs)]
