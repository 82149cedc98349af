//! Fuzz the per-input decoder wrapper (sanitising + openh264) with arbitrary access units.
//! Run: `cargo +nightly fuzz run input_decoder` (from mixer/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixer::video::InputDecoder;

fuzz_target!(|data: &[u8]| {
    let mut d = InputDecoder::new();
    // Split the input into a few access units at 0xFE bytes to exercise state across calls.
    for au in data.split(|b| *b == 0xfe).take(8) {
        let _ = d.decode(au);
    }
});
