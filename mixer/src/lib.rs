//! cohost mixer.

pub mod mux;
