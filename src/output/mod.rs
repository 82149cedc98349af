//! Live outputs of the mixed program: RTMP publishing (with reconnection) and HLS.
//!
//! * [`ProgramOutputs`] — the entry point for the server: feed it the mixer's
//!   `MixerOutput`s; add/remove/list RTMP outputs; get the [`HlsStore`].
//! * [`RtmpOutput`] — one task per RTMP destination, fed FLV tag bodies through a
//!   `tokio::sync::broadcast` channel plus a `watch` of the [`SequenceHeaders`];
//!   observable as an [`OutputStatus`] (`connecting` | `live` | `retrying` | `failed`,
//!   bytes sent, reconnect count).
//! * [`hls::HlsSegmenter`] — pure segmenter (H.264 access units + AAC frames → MPEG-TS
//!   segments) publishing into an [`hls::HlsStore`] that the HTTP layer serves
//!   `index.m3u8` and `seg{N}.ts` from.
//! * [`flv_live`] — HTTP-FLV for audiences (`GET /live/{room}.flv`): headers, the latest
//!   GOP from a GOP cache, then the live tags; slow viewers dropped.
//! * [`rtmp`], [`chunk`], [`amf0`] — the RTMP publish client underneath.
//! * [`routes`] — their HTTP side: HLS files and the RTMP outputs API.

/// AMF0 lives with the FLV muxer (`mixer::mux::amf0`); RTMP commands use it from here.
pub use mixer::mux::amf0;
pub mod chunk;
pub mod flv_live;
pub mod hls;
pub mod program;
pub mod recording;
pub mod recordings_http;
pub mod routes;
pub mod rtmp;
pub mod rtmp_output;
pub mod snapshot;
#[cfg(test)]
mod test_server;

pub use hls::{HlsConfig, HlsSegmenter, HlsStore};
pub use program::{OutputInfo, ProgramOutputs, ProgramOutputsConfig};
pub use rtmp::{RtmpError, RtmpPublisher, RtmpUrl, RtmpUrlError, TagKind};
pub use rtmp_output::{
    FlvTag, OutputState, OutputStatus, RtmpOutput, RtmpOutputConfig, SequenceHeaders,
};
