//! cohost signaling.
