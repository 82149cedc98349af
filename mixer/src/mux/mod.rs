//! Muxers written as pure functions over byte slices: FLV (RTMP and files) and MPEG-TS (HLS).

pub mod flv;
pub mod ts;
