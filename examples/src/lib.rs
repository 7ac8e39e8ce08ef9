//! # cadre-examples
//!
//! Runnable examples of cadre, one file each under `examples/`; each file's header gives the
//! command that runs it.

#![deny(missing_docs)]

/// The README's Rust blocks, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;
