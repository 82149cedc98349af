//! Shared test harness: the real server on port 0, tokens, WebSocket signaling clients and
//! webrtc-rs peers that send known H.264 + Opus and collect what they receive.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, Registry,
};

pub mod clip;
pub mod cluster;
pub mod impair;
pub mod nginx;
pub mod raw;

pub const API_KEY: &str = "test-api-key";
pub const API_SECRET: &str = "test-secret-0123456789";

static PORT_BASE: AtomicU16 = AtomicU16::new(0);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub ports: (u16, u16),
    pub state: cohost::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("COHOST_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Starts the real server on 127.0.0.1:0 with media on loopback.
pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// [`start_server`] with settings changed by `tune` first.
pub async fn start_server_with(tune: impl FnOnce(&mut cohost::Config)) -> TestServer {
    init_tracing();
    // Separate port ranges per test binary and server, so parallel tests do not collide.
    let base = 20000
        + (std::process::id() % 100) as u16 * 300
        + PORT_BASE.fetch_add(1, Ordering::Relaxed) % 3 * 100;
    let mut config = cohost::Config {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        dev_mode: false,
        ..Default::default()
    };
    config.rtc.media_ip = "127.0.0.1".parse().unwrap();
    config.rtc.port_min = base;
    config.rtc.port_max = base + 99;
    // As the server's own flag/env (benches compare pool sizes).
    if let Some(n) = std::env::var("COHOST_MIXER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.program.mixer_threads = n;
    }
    tune(&mut config);
    let server = cohost::build(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = server.router.clone();
    // The server's own accept loop (limits, timeouts, upgrades, graceful shutdown), as
    // `cohost::run`.
    tokio::spawn(cohost::conn::serve_limited(
        listener,
        router,
        async {
            let _ = rx.await;
        },
        config.http.clone(),
        server.state.http.clone(),
    ));
    TestServer {
        addr,
        ports: (base, base + 99),
        state: server.state,
        shutdown: Some(tx),
    }
}

impl TestServer {
    pub fn media_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.ports.0..=self.ports.1
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Mints a token through the API.
    pub async fn token(&self, room: &str, identity: &str, role: &str) -> String {
        let r = reqwest::Client::new()
            .post(self.url("/api/tokens"))
            .bearer_auth(API_KEY)
            .json(&json!({"room": room, "identity": identity, "role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// `GET path` with the API key, as JSON.
    pub async fn get_api(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `/metrics` (with the API key: outside development mode it needs it).
    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(self.url("/metrics"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn metric(&self, name: &str) -> u64 {
        let m = self.metrics().await;
        m.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0)
    }
}

/// A signaling client.
pub struct Ws {
    tx: mpsc::UnboundedSender<Message>,
    pub rx: mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
}

impl Ws {
    pub async fn connect(server: &TestServer, token: &str) -> Ws {
        Ws::connect_url(&format!("ws://{}/ws?token={}", server.addr, token)).await
    }

    /// A socket to `url` (`ws://host:port/ws?token=...`).
    pub async fn connect_url(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (mut sink, mut source) = stream.split();
        let (tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (in_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        tokio::spawn(async move {
            while let Some(Ok(m)) = source.next().await {
                if let Message::Text(t) = m {
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        let _ = in_tx.send(v);
                    }
                }
            }
        });
        Ws {
            tx,
            rx,
            seen: Vec::new(),
        }
    }

    pub fn send(&self, v: Value) {
        self.tx.send(Message::Text(v.to_string().into())).unwrap();
    }

    pub fn send_raw(&self, text: String) {
        self.tx.send(Message::Text(text.into())).unwrap();
    }

    pub fn close(&self) {
        let _ = self.tx.send(Message::Close(None));
    }

    /// Waits for a message matching `pred` (keeping all messages seen).
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                _ => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
            }
        }
    }

    pub async fn wait_type(&mut self, ty: &str) -> Value {
        let t = ty.to_owned();
        self.wait(ty, move |v| v["type"] == t.as_str()).await
    }

    /// Whether a message matching `pred` has arrived (without waiting).
    pub fn seen_any(&mut self, pred: impl Fn(&Value) -> bool) -> bool {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        self.seen.iter().any(pred)
    }

    /// Drops remembered messages (so a later wait sees only new ones).
    pub fn forget(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        self.seen.clear();
    }
}

/// What a peer received on one remote track.
#[derive(Default)]
pub struct Received {
    pub packets: usize,
    pub frames: Vec<Vec<u8>>,
    pub ended: bool,
    pub last_packet: Option<Instant>,
}

struct ClientHandler {
    gathered: Arc<tokio::sync::Notify>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    state: Arc<Mutex<RTCPeerConnectionState>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        *self.state.lock().unwrap() = s;
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(t);
    }
}

/// A client peer connection on loopback.
pub struct ClientPeer {
    pub pc: Arc<dyn PeerConnection>,
    gathered: Arc<tokio::sync::Notify>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pub state: Arc<Mutex<RTCPeerConnectionState>>,
}

pub async fn client_peer() -> ClientPeer {
    let mut me = cohost::rtc::media_engine().unwrap();
    let reg = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let se = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .build();
    let gathered = Arc::new(tokio::sync::Notify::new());
    let (ttx, trx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new(RTCPeerConnectionState::New));
    let h = Arc::new(ClientHandler {
        gathered: gathered.clone(),
        tracks: ttx,
        state: state.clone(),
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(se)
        .with_interceptor_registry(reg)
        .with_handler(h as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    ClientPeer {
        pc: Arc::new(pc),
        gathered,
        tracks: trx,
        state,
    }
}

impl ClientPeer {
    /// Creates the offer and waits for ICE gathering.
    pub async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        let g = self.gathered.notified();
        self.pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(3), g).await;
        self.pc.local_description().await.unwrap().sdp
    }

    pub async fn set_answer(&self, sdp: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp.to_owned()).unwrap())
            .await
            .unwrap();
    }

    pub async fn add_recv(&self) {
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            self.pc
                .add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
        }
    }
}

/// A synthetic camera + microphone: openh264-encoded frames of a known size (a moving
/// pattern), and Opus frames of a sine tone.
pub struct Sender {
    /// Wall-clock time (Unix ms) each frame number was captured (handed to the track).
    pub capture_ms: Arc<Mutex<Vec<f64>>>,
    /// When set to `k`, the audio is silent but for a 100 ms tone starting exactly with the
    /// capture of every `k`-th frame (A/V sync measurements); otherwise a steady tone.
    pub beep_every: Option<u64>,
    pub video: Arc<TrackLocalStaticSample>,
    pub audio: Arc<TrackLocalStaticSample>,
    pub vssrc: u32,
    pub assrc: u32,
}

pub async fn add_sender(peer: &ClientPeer, name: &str) -> Sender {
    let vssrc: u32 = rand::random();
    let assrc: u32 = rand::random();
    let h264 = rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .into(),
        rtcp_feedback: vec![],
    };
    let opus = rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    let mk = |kind, ssrc, codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec, k: &str| {
        Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                cohost::rtc::local_track(name.to_owned(), format!("{name}-{k}"), kind, ssrc, codec),
            )
            .unwrap(),
        )
    };
    let video = mk(RtpCodecKind::Video, vssrc, h264, "video");
    let audio = mk(RtpCodecKind::Audio, assrc, opus, "audio");
    for t in [&video, &audio] {
        peer.pc
            .add_transceiver_from_track(
                t.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }
    Sender {
        capture_ms: Arc::new(Mutex::new(Vec::new())),
        beep_every: None,
        video,
        audio,
        vssrc,
        assrc,
    }
}

impl Sender {
    /// Sends `seconds` of media in real time (30 fps video of `w`x`h`, 20 ms Opus frames):
    /// a moving luma gradient with the frame counter ([`draw_counter`]), neutral chroma.
    pub fn spawn(
        &self,
        w: usize,
        h: usize,
        seconds: f64,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_painted(w, h, seconds, stop, |yuv, w, h, frame| {
            for y in 0..h {
                for x in 0..w {
                    yuv[y * w + x] = ((x + y + frame as usize * 4) % 256) as u8;
                }
            }
            draw_counter(yuv, w, h, frame as u32);
            for v in &mut yuv[w * h..] {
                *v = 128;
            }
        })
    }

    /// Like [`Sender::spawn`], every picture one flat colour (I420 `y`, `u`, `v`).
    pub fn spawn_solid(
        &self,
        w: usize,
        h: usize,
        seconds: f64,
        stop: Arc<std::sync::atomic::AtomicBool>,
        (y, u, v): (u8, u8, u8),
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_painted(w, h, seconds, stop, move |yuv, w, h, _| {
            let (luma, chroma) = yuv.split_at_mut(w * h);
            luma.fill(y);
            let (cb, cr) = chroma.split_at_mut(w * h / 4);
            cb.fill(u);
            cr.fill(v);
        })
    }

    /// Sends media whose pictures `paint(i420, w, h, frame)` draws.
    pub fn spawn_painted(
        &self,
        w: usize,
        h: usize,
        seconds: f64,
        stop: Arc<std::sync::atomic::AtomicBool>,
        paint: impl Fn(&mut [u8], usize, usize, u64) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let video = self.video.clone();
        let audio = self.audio.clone();
        let vssrc = self.vssrc;
        let assrc = self.assrc;
        let capture_ms = self.capture_ms.clone();
        let beep_every = self.beep_every;
        tokio::spawn(async move {
            use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
            use openh264::formats::YUVBuffer;
            use openh264::OpenH264API;
            let cfg = EncoderConfig::new()
                .bitrate(BitRate::from_bps(400_000))
                .max_frame_rate(FrameRate::from_hz(30.0))
                .intra_frame_period(IntraFramePeriod::from_num_frames(30));
            let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).unwrap();
            let mut opus_enc =
                opus::Encoder::new(48000, opus::Channels::Stereo, opus::Application::Audio)
                    .unwrap();
            let start = Instant::now();
            let mut frame = 0u64;
            let mut audio_n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while start.elapsed().as_secs_f64() < seconds && !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = start.elapsed();
                while (audio_n * 20) as u128 <= now.as_millis() {
                    let mut pcm = vec![0i16; 960 * 2];
                    for i in 0..960 {
                        let t = (audio_n * 960 + i as u64) as f32 / 48000.0;
                        let on = beep_every.is_none_or(|k| {
                            // Milliseconds since the last beep's frame was captured.
                            let ms = f64::from(t) * 1000.0;
                            let period = k as f64 * 1000.0 / 30.0;
                            ms % period < 100.0
                        });
                        let s = if on {
                            (t * 440.0 * std::f32::consts::TAU).sin() * 8000.0
                        } else {
                            0.0
                        };
                        pcm[2 * i] = s as i16;
                        pcm[2 * i + 1] = s as i16;
                    }
                    let pkt = opus_enc.encode_vec(&pcm, 4000).unwrap();
                    let s = Sample {
                        data: Bytes::from(pkt),
                        duration: Duration::from_millis(20),
                        ..Sample::new(Instant::now())
                    };
                    let _ = audio.write_sample(assrc, 111, &s, &[]).await;
                    audio_n += 1;
                }
                if (frame * 1000 / 30) as u128 <= now.as_millis() {
                    let mut yuv = vec![0u8; w * h * 3 / 2];
                    paint(&mut yuv, w, h, frame);
                    let buf = YUVBuffer::from_vec(yuv, w, h);
                    let bits = enc.encode(&buf).unwrap().to_vec();
                    let s = Sample {
                        data: Bytes::from(bits),
                        duration: Duration::from_millis(33),
                        ..Sample::new(Instant::now())
                    };
                    capture_ms.lock().unwrap().push(unix_ms());
                    let _ = video.write_sample(vssrc, 102, &s, &[]).await;
                    frame += 1;
                }
            }
        })
    }
}

/// Now as Unix milliseconds.
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Bits of the frame counter drawn as 16 blocks across the picture's middle band
/// (`h*100/240 .. h*140/240`): white (235) for 1, black (16) for 0, most significant first.
pub fn draw_counter(y_plane: &mut [u8], w: usize, h: usize, n: u32) {
    let bw = w / 16;
    for row in h * 100 / 240..h * 140 / 240 {
        for i in 0..16 {
            let v = if (n >> (15 - i)) & 1 == 1 { 235 } else { 16 };
            for x in i * bw..(i + 1) * bw {
                y_plane[row * w + x] = v;
            }
        }
    }
}

/// Reads [`draw_counter`]'s blocks back from a luma plane where the source band's centre row
/// is `row` and block `i`'s centre is at `x0 + i * dx`.
pub fn read_counter(y: &[u8], stride: usize, row: usize, x0: usize, dx: usize) -> u32 {
    (0..16).fold(0u32, |acc, i| {
        let v = y[row * stride + x0 + i * dx];
        (acc << 1) | u32::from(v > 128)
    })
}

/// Collects a remote track's packets; for video, reassembles access units (RFC 6184).
pub fn collect(track: Arc<dyn TrackRemote>, kind: RtpCodecKind) -> Arc<Mutex<Received>> {
    let out = Arc::new(Mutex::new(Received::default()));
    let o = out.clone();
    tokio::spawn(async move {
        let mut depack = H264Packet::default();
        let mut au: Vec<u8> = Vec::new();
        while let Some(ev) = track.poll().await {
            let TrackRemoteEvent::OnRtpPacket(p) = ev else {
                continue;
            };
            let mut r = o.lock().unwrap();
            r.packets += 1;
            r.last_packet = Some(Instant::now());
            if kind == RtpCodecKind::Audio {
                r.frames.push(p.payload.to_vec());
                continue;
            }
            if let Ok(b) = depack.depacketize(&p.payload) {
                au.extend_from_slice(&b);
            }
            if p.header.marker && !au.is_empty() {
                r.frames.push(std::mem::take(&mut au));
            }
        }
        o.lock().unwrap().ended = true;
    });
    out
}

/// Decodes access units with openh264; returns the sizes of decoded pictures.
pub fn decode_h264(frames: &[Vec<u8>]) -> Vec<(usize, usize)> {
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;
    let mut dec = Decoder::new().unwrap();
    let mut sizes = Vec::new();
    for f in frames {
        if let Ok(Some(pic)) = dec.decode(f) {
            sizes.push(pic.dimensions());
        }
    }
    sizes
}

/// How many of the received access units decode with openh264 to a `size` picture.
pub fn decoded_at(r: &Mutex<Received>, size: (usize, usize)) -> usize {
    let frames = r.lock().unwrap().frames.clone();
    decode_h264(&frames).iter().filter(|d| **d == size).count()
}

/// Waits (up to 20 s) until the server at `base` answers `/healthz`.
pub async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RMS of the left channel of interleaved stereo samples.
pub fn rms_left(stereo: &[i16]) -> f64 {
    let sum: f64 = stereo
        .iter()
        .step_by(2)
        .map(|&s| f64::from(s).powi(2))
        .sum();
    (sum / (stereo.len() / 2).max(1) as f64).sqrt()
}

/// Decodes Opus packets; returns how many decoded and the RMS of the decoded audio.
pub fn decode_opus(frames: &[Vec<u8>]) -> (usize, f64) {
    let mut dec = opus::Decoder::new(48000, opus::Channels::Stereo).unwrap();
    let mut n = 0;
    let mut sum = 0f64;
    let mut count = 0usize;
    let mut pcm = vec![0i16; 5760 * 2];
    for f in frames {
        if let Ok(s) = dec.decode(f, &mut pcm, false) {
            n += 1;
            for v in &pcm[..s * 2] {
                sum += f64::from(*v) * f64::from(*v);
            }
            count += s * 2;
        }
    }
    (
        n,
        if count > 0 {
            (sum / count as f64).sqrt()
        } else {
            0.0
        },
    )
}

/// Waits until `f` is true or panics after `secs`.
pub async fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

/// [`eventually`] with an async condition, polled every 100 ms.
pub async fn eventually_async<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

pub type Tracks = HashMap<(String, RtpCodecKind), Arc<Mutex<Received>>>;

/// POSTs an SDP offer (WHIP/WHEP); returns (status, location, body).
pub async fn post_sdp(url: &str, token: &str, sdp: &str) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, loc, r.text().await.unwrap())
}

/// A WHIP publisher sending synthetic media; returns the peer, the resource URL and its stop flag.
pub async fn whip_publish(
    s: &TestServer,
    room: &str,
    identity: &str,
    role: &str,
    w: usize,
    h: usize,
) -> (ClientPeer, String, Arc<std::sync::atomic::AtomicBool>) {
    let (peer, loc, _, stop) = whip_start(s, room, identity, role, w, h).await;
    (peer, loc, stop)
}

/// Like [`whip_publish`], also returning each frame's capture time.
pub async fn whip_publish_timed(
    s: &TestServer,
    room: &str,
    identity: &str,
    role: &str,
    w: usize,
    h: usize,
) -> (
    ClientPeer,
    Arc<Mutex<Vec<f64>>>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (peer, _, capture_ms, stop) = whip_start(s, room, identity, role, w, h).await;
    (peer, capture_ms, stop)
}

type Started = (
    ClientPeer,
    String,
    Arc<Mutex<Vec<f64>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// Publishes with WHIP and starts the synthetic media: the peer, the resource URL, the
/// frames' capture times, the stop flag.
async fn whip_start(
    s: &TestServer,
    room: &str,
    identity: &str,
    role: &str,
    w: usize,
    h: usize,
) -> Started {
    let token = s.token(room, identity, role).await;
    let (peer, sender, loc) =
        whip_connect(&s.url(&format!("/whip/{room}")), &token, identity).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(w, h, 120.0, stop.clone());
    let loc = s.url(&loc.expect("Location header"));
    (peer, loc, sender.capture_ms.clone(), stop)
}

/// A WHIP publication to `url` (`…/whip/{room}`) with `token`, its tracks named after
/// `identity`, connected but not sending yet (`Sender::spawn*`): the peer, its sender and the
/// resource's `Location`.
pub async fn whip_connect(
    url: &str,
    token: &str,
    identity: &str,
) -> (ClientPeer, Sender, Option<String>) {
    let peer = client_peer().await;
    let sender = add_sender(&peer, identity).await;
    let offer = peer.offer().await;
    let (status, loc, body) = post_sdp(url, token, &offer).await;
    assert_eq!(status, 201, "WHIP POST: {body}");
    peer.set_answer(&body).await;
    (peer, sender, loc)
}

/// A WHEP subscriber of one co-host; returns the peer (tracks arrive on `peer.tracks`).
pub async fn whep_subscribe(
    s: &TestServer,
    room: &str,
    target: &str,
    token: &str,
) -> (ClientPeer, String) {
    let peer = client_peer().await;
    peer.add_recv().await;
    let offer = peer.offer().await;
    let mut tries = 0;
    loop {
        let (status, loc, body) =
            post_sdp(&s.url(&format!("/whep/{room}/{target}")), token, &offer).await;
        if status == 404 && tries < 50 {
            // The publisher's tracks are not up yet.
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 201, "WHEP POST: {body}");
        peer.set_answer(&body).await;
        return (peer, s.url(&loc.expect("Location header")));
    }
}

/// A WHEP viewer of the room's program (`/whep/{room}`), retrying for up to 10 s while the
/// program is not up yet (it starts once a co-host's tracks are up).
pub async fn whep_program(s: &TestServer, room: &str, token: &str) -> ClientPeer {
    let peer = client_peer().await;
    peer.add_recv().await;
    let offer = peer.offer().await;
    let mut tries = 0;
    let body = loop {
        let (st, _, body) = post_sdp(&s.url(&format!("/whep/{room}")), token, &offer).await;
        if st == 201 {
            break body;
        }
        tries += 1;
        assert!(tries < 100, "no program: {st} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    peer.set_answer(&body).await;
    peer
}

/// Waits for the two tracks of a subscription and starts collecting them.
pub async fn collect_both(peer: &mut ClientPeer) -> (Arc<Mutex<Received>>, Arc<Mutex<Received>>) {
    let mut video = None;
    let mut audio = None;
    for _ in 0..2 {
        let t = tokio::time::timeout(Duration::from_secs(15), peer.tracks.recv())
            .await
            .expect("no remote track")
            .unwrap();
        let kind = t.kind().await;
        let c = collect(t, kind);
        if kind == RtpCodecKind::Video {
            video = Some(c);
        } else {
            audio = Some(c);
        }
    }
    (video.unwrap(), audio.unwrap())
}

pub async fn delete(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The timed ID3 packets of an MPEG-TS file as ffprobe reads them: (PTS in 90 kHz ticks, the
/// tag's bytes), in order. Panics unless ffprobe finds a `timed_id3` data stream.
pub fn timed_id3_packets(path: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_data",
        ])
        .args(["-select_streams", "d", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    assert_eq!(info["streams"][0]["codec_name"], "timed_id3", "{info}");
    let packets = info["packets"].as_array().cloned().unwrap_or_default();
    packets
        .iter()
        .map(|p| {
            // ffprobe's hex dump: "00000000: 4944 3304 ...  ID3." — 40 hex columns a line.
            let hex: String = p["data"]
                .as_str()
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(_, r)| r))
                .map(|r| r.get(..40).unwrap_or(r).replace(' ', ""))
                .collect();
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            (p["pts"].as_i64().expect("pts"), bytes)
        })
        .collect()
}
