//! Any bytes as a signaling message, then through a room: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::auth::Role;
use signaling::room::{Room, Via};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = signaling::protocol::parse_client_message(text) else { return };
    let mut room = Room::new("r");
    let _ = room.join("h", "h", Role::Host, Via::Ws(1));
    let _ = room.join("g", "g", Role::Guest, Via::Ws(2));
    let _ = room.handle("g", msg.clone());
    let _ = room.handle("h", msg);
});
