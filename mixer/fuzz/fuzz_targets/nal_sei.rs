//! Fuzz the Annex-B splitter, access-unit grouping, SEI parsing and emulation prevention on
//! untrusted bytes. Run: `cargo +nightly fuzz run nal_sei` (from mixer/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixer::h264 as nal;

fuzz_target!(|data: &[u8]| {
    let mut total = 0usize;
    for n in nal::split_annexb(data) {
        assert!(!n.is_empty());
        total += n.len();
        for msg in nal::parse_sei(n) {
            let _ = msg.user_data_unregistered();
        }
    }
    assert!(total <= data.len());
    for au in nal::access_units(data) {
        let _ = nal::find_user_data(&au, &nal::LAYOUT_SEI_UUID);
        let _ = nal::insert_sei_before_slices(&au, &[]);
    }
    // Emulation prevention round trip and SEI build/parse round trip.
    let ebsp = nal::add_emulation_prevention(data);
    assert_eq!(nal::remove_emulation_prevention(&ebsp), data);
    let sei = nal::build_user_data_sei(&nal::CUE_SEI_UUID, data);
    let msgs = nal::parse_sei(&sei);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].user_data_unregistered(), Some((nal::CUE_SEI_UUID, data)));
    // A SEI NAL must survive being framed in an access unit and split again.
    let mut au = Vec::new();
    nal::push_nal(&mut au, &sei);
    nal::push_nal(&mut au, &[0x65, 0x88]);
    assert_eq!(nal::find_user_data(&au, &nal::CUE_SEI_UUID), vec![data.to_vec()]);
});
