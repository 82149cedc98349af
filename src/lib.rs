//! cohost server.
