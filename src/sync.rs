//! The server's lock policy, in one place: `std::sync::Mutex` for short critical sections
//! (maps of rooms, tracks and sessions; never held across an `.await`), and a poisoned lock is
//! taken as it is. Every critical section leaves its data consistent at each step, so a
//! panic in one (which the runtime confines to its task) must not take every later caller
//! down with it. `signaling` follows the same policy for its room registry.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, tolerating poisoning (see the module docs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
