//! Fuzz what the studio takes from outside: an uploaded image file (`PUT /api/images`) through
//! the decoder, the scaling to an overlay of the size the first bytes pick, and the blend onto
//! a canvas at any position; and a recording file's fragment through the MP4 reader.
//! Run: `cargo +nightly fuzz run studio_input` (from mixer/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixer::compose::{I420Frame, Yuv};
use mixer::decor::{blend, decode_image, OverlayPicture};
use mixer::mux::mp4::read::track_end;

fuzz_target!(|data: &[u8]| {
    let _ = track_end(data, 1);
    let Some((&[w, h, x, y], file)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(image) = decode_image(file) else {
        return;
    };
    let (w, h) = (u32::from(w % 64) * 2 + 2, u32::from(h % 64) * 2 + 2);
    let mut resizer = fast_image_resize::Resizer::new();
    let Some(pic) = OverlayPicture::from_image(&image, w, h, &mut resizer) else {
        return;
    };
    let mut canvas = I420Frame::new(64, 48, Yuv::from_rgb(16, 16, 16));
    blend(&mut canvas, &pic, i64::from(x) - 128, i64::from(y) - 128, 200);
});
