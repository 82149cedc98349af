//! Muxers written as pure functions over byte slices: FLV (RTMP and files) and MPEG-TS (HLS),
//! and AMF0, which FLV metadata and RTMP commands are written in.

pub mod amf0;
pub mod flv;
pub mod mp4;
pub mod ts;
