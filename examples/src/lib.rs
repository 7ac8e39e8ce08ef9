//! # cadre-examples
//!
//! Runnable examples of cadre, one file each under `examples/`; each file's header gives the
//! command that runs it.

#![deny(missing_docs)]
