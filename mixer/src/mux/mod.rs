//! Muxers written as pure functions over byte slices: FLV (RTMP and files), MPEG-TS (HLS),
//! fragmented MP4 (recordings, and [`mp4::read`] to read their fragments back), and AMF0,
//! which FLV metadata and RTMP commands are written in.

pub mod amf0;
pub mod flv;
pub mod mp4;
pub mod ts;
