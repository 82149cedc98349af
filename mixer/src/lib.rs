//! cohost mixer.
