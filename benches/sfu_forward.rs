//! Benchmark of the SFU forwarding path through the real server, over loopback.
//!
//! The bench process runs the real server (`cohost::build`, HTTP on 127.0.0.1:0, media on
//! 127.0.0.1; the live program's mixer is detached, see `SFU_BENCH_WITH_PROGRAM`). For each
//! scenario it starts itself again as a *client* process (`--client`), which connects N
//! webrtc-rs publishers (WHIP) and N×M webrtc-rs subscribers (WHEP: one peer connection per
//! publisher and subscriber, as the SFU forwards them). Clients live in another process so the
//! server's CPU time (`/proc/self/stat`) is the server's alone: webrtc-rs drivers run as tasks
//! on the ambient tokio runtime, so in one process client and server work would share threads.
//!
//! Publishers send pre-built H.264-like RTP (FU-A fragments of 1,100 bytes; 8-packet P frames,
//! a 40-packet IDR frame every 30 frames) through `TrackLocalStaticRTP`, no encoder. Each
//! payload carries the send time (nanoseconds since the client process's epoch `Instant`) and a
//! packet index; subscribers (same process, same clock) compute the client→server→client delay.
//! The server-internal delay (publisher track read → subscriber `write_rtp` returned: the
//! broadcast, the subscriber task and the hand-off to the webrtc-rs driver, without SRTP or
//! sockets) comes from `cohost::sfu::set_forward_observer`.
//!
//! Each scenario runs two phases after a one-second warm-up:
//! - `paced`: 30 frames/s per publisher (~272 packets/s, ~2.4 Mbit/s), a realistic camera.
//! - `max`: as fast as possible with at most `SFU_BENCH_WINDOW` packets per publisher in flight
//!   (sent but not yet received by its slowest subscriber). Much larger windows overflow the
//!   UDP receive buffers and lose packets, also without the server (`direct`).
//!
//! Run: `cargo bench --bench sfu_forward`. Environment: `SFU_BENCH_SCENARIOS` (default
//! `direct,1x1,2x2,1x8,4x4`: N publishers x M subscribers each; `direct` is one publisher
//! peer connected straight to one subscriber peer, no server: the client-side baseline),
//! `SFU_BENCH_SECS` (measured seconds per phase, default 4), `SFU_BENCH_WINDOW` (default 64),
//! `SFU_BENCH_SERVER_THREADS` (server tokio workers, default: one per core),
//! `SFU_BENCH_WITH_PROGRAM` (set: leave the program pipeline attached), `SFU_BENCH_NO_NACK`
//! (set: the clients do not offer generic NACK, so nobody retransmits).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    Registry,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const API_KEY: &str = "bench-api-key";
const API_SECRET: &str = "bench-secret-0123456789";
/// RTP payload bytes per packet (typical H.264 FU-A fragment under a 1,200-byte MTU budget).
const PAYLOAD: usize = 1100;
/// Bytes of the payload the bench uses: FU indicator, FU header, send ns, index, phase.
const STAMP: usize = 2 + 8 + 8 + 1;
const P_FRAME_PKTS: usize = 8;
const KEY_FRAME_PKTS: usize = 40;
const GOP: u64 = 30;
const FPS: u64 = 30;
const WARMUP: Duration = Duration::from_secs(1);

const MODE_PACED: u8 = 1;
const MODE_MAX: u8 = 2;
const MODE_STOP: u8 = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let cfg = ClientCfg::parse(&args[i + 1..])?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("bench-client")
            .enable_all()
            .build()?;
        return rt.block_on(client_main(cfg));
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.thread_name("sfu-worker").enable_all();
    if let Ok(n) = std::env::var("SFU_BENCH_SERVER_THREADS") {
        b.worker_threads(n.parse()?);
    }
    b.build()?.block_on(server_main())
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers (both processes)

/// CPU time (user + system) of this process, all threads, including finished ones.
fn process_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu(&s))
        .unwrap_or_default()
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / clk_tck()))
}

/// Datagrams the kernel dropped for a full UDP receive buffer (system-wide, `/proc/net/snmp`).
fn udp_rcvbuf_errors() -> u64 {
    let t = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = t.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (udp.next(), udp.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The 1-minute load average (other work on the machine shows here).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// p-quantile of sorted nanoseconds, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

#[derive(Clone, Copy, Default, Debug)]
struct Lat {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Lat {
    fn of(mut v: Vec<u64>) -> Lat {
        v.sort_unstable();
        Lat {
            n: v.len(),
            p50: pct_ms(&v, 0.50),
            p95: pct_ms(&v, 0.95),
            p99: pct_ms(&v, 0.99),
            max: pct_ms(&v, 1.0),
        }
    }
    fn encode(&self) -> String {
        format!(
            "n={} p50={} p95={} p99={} max={}",
            self.n, self.p50, self.p95, self.p99, self.max
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Server process

static RECORDING: AtomicBool = AtomicBool::new(false);
static SERVER_LAT: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn observe(at: Instant) {
    if RECORDING.load(Ordering::Relaxed) {
        let d = at.elapsed().as_nanos() as u64;
        SERVER_LAT.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }
}

struct Snap {
    at: Instant,
    cpu: Duration,
    pkts_in: u64,
    pkts_out: u64,
    dropped: u64,
    udp_drops: u64,
}

fn snap(m: &cohost::sfu::SfuMetrics) -> Snap {
    Snap {
        at: Instant::now(),
        cpu: process_cpu(),
        pkts_in: m.packets_in.load(Ordering::Relaxed),
        pkts_out: m.packets_out.load(Ordering::Relaxed),
        dropped: m.packets_dropped.load(Ordering::Relaxed),
        udp_drops: udp_rcvbuf_errors(),
    }
}

struct Row {
    scenario: String,
    phase: String,
    secs: f64,
    in_pps: f64,
    out_pps: f64,
    dropped: u64,
    udp_drops: u64,
    load: f64,
    cpu_cores: f64,
    per_core: f64,
    srv: Lat,
    client: HashMap<String, f64>,
}

async fn server_main() -> Res<()> {
    let scenarios = std::env::var("SFU_BENCH_SCENARIOS").unwrap_or("direct,1x1,2x2,1x8,4x4".into());
    let secs: u64 = env_or("SFU_BENCH_SECS", 4);
    let window: u64 = env_or("SFU_BENCH_WINDOW", 64);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("COHOST_BENCH_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .try_init();

    let config = cohost::Config {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        dev_mode: false,
        rtc: cohost::config::RtcConfig {
            media_ip: "127.0.0.1".parse()?,
            port_min: 52000,
            port_max: 52399,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = cohost::build(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = server.router.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service()).await;
    });
    cohost::sfu::set_forward_observer(observe);
    // The live program (mixer) is another consumer of the publishers' broadcast, not part of
    // the forwarding path, and could not decode the synthetic payloads anyway: detach it.
    let with_program = std::env::var_os("SFU_BENCH_WITH_PROGRAM").is_some();
    if !with_program {
        server.program_feed.abort();
    }
    let metrics = server.state.sfu.metrics.clone();

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "sfu_forward: server on {addr}, {workers} tokio workers, {cores} cores; {secs} s per phase, window {window}, program (mixer) {}",
        if with_program { "attached" } else { "detached" }
    );
    let mut rows = Vec::new();
    let total = Instant::now();
    for (k, sc) in scenarios.split(',').enumerate() {
        let direct = sc.trim() == "direct";
        let (n, m) = if direct {
            Some((1, 1))
        } else {
            sc.trim()
                .split_once('x')
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        }
        .ok_or_else(|| format!("bad scenario `{sc}` (want NxM or direct)"))?;
        let label = format!("s{k}");
        let t = Instant::now();
        let spec = Spec {
            label: &label,
            n,
            m,
            secs,
            window,
            direct,
        };
        let mut got = run_scenario(addr, &metrics, &spec).await?;
        eprintln!(
            "sfu_forward: {n}x{m} done in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for r in &mut got {
            r.scenario = if direct {
                "1x1 direct, no server".into()
            } else {
                format!("{n}x{m}")
            };
        }
        rows.extend(got);
        // Let the previous scenario's peer connections close before the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    print_table(&rows, workers, cores, secs, window);
    eprintln!("sfu_forward: total {:.1} s", total.elapsed().as_secs_f64());
    Ok(())
}

struct Spec<'a> {
    label: &'a str,
    n: usize,
    m: usize,
    secs: u64,
    window: u64,
    direct: bool,
}

async fn run_scenario(
    addr: SocketAddr,
    metrics: &cohost::sfu::SfuMetrics,
    sp: &Spec<'_>,
) -> Res<Vec<Row>> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--client")
        .args([
            addr.to_string(),
            sp.label.to_owned(),
            sp.n.to_string(),
            sp.m.to_string(),
            sp.secs.to_string(),
            sp.window.to_string(),
            if sp.direct { "direct" } else { "sfu" }.to_owned(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut start: Option<Snap> = None;
    let mut pending: HashMap<String, Row> = HashMap::new();
    let mut rows = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("START"), Some(_)) => {
                SERVER_LAT.lock().unwrap_or_else(|p| p.into_inner()).clear();
                start = Some(snap(metrics));
                RECORDING.store(true, Ordering::Relaxed);
            }
            (Some("END"), Some(phase)) => {
                RECORDING.store(false, Ordering::Relaxed);
                let b = snap(metrics);
                let a = start.take().ok_or("END without START")?;
                let secs = b.at.duration_since(a.at).as_secs_f64();
                let cpu = b.cpu.saturating_sub(a.cpu).as_secs_f64();
                let out = (b.pkts_out - a.pkts_out) as f64;
                let lat =
                    std::mem::take(&mut *SERVER_LAT.lock().unwrap_or_else(|p| p.into_inner()));
                pending.insert(
                    phase.to_owned(),
                    Row {
                        scenario: String::new(),
                        phase: phase.to_owned(),
                        secs,
                        in_pps: (b.pkts_in - a.pkts_in) as f64 / secs,
                        out_pps: out / secs,
                        dropped: b.dropped - a.dropped,
                        udp_drops: b.udp_drops - a.udp_drops,
                        load: loadavg(),
                        cpu_cores: cpu / secs,
                        per_core: if cpu > 0.0 { out / cpu } else { f64::NAN },
                        srv: Lat::of(lat),
                        client: HashMap::new(),
                    },
                );
            }
            (Some("RESULT"), Some(phase)) => {
                let mut row = pending.remove(phase).ok_or("RESULT without END")?;
                for kv in it {
                    if let Some((k, v)) = kv.split_once('=') {
                        row.client
                            .insert(k.to_owned(), v.parse().unwrap_or(f64::NAN));
                    }
                }
                rows.push(row);
            }
            _ => eprintln!("client: {line}"),
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(format!("client process failed: {status}").into());
    }
    Ok(rows)
}

fn print_table(rows: &[Row], workers: usize, cores: usize, secs: u64, window: u64) {
    let c = |r: &Row, k: &str| r.client.get(k).copied().unwrap_or(f64::NAN);
    println!();
    println!(
        "SFU forwarding, real server over loopback: {cores} cores, server {workers} tokio workers, \
         {secs} s per phase, max-phase window {window} packets/publisher, payload {PAYLOAD} B"
    );
    println!(
        "fwd pps = packets the server wrote to subscribers per second; pps/core = fwd packets per \
         second of server CPU (user+sys, /proc/self/stat); e2e = publisher write_rtp -> subscriber \
         track read (both clients in one process); srv = server track read -> write_rtp returned; \
         loss = 1 - received / (sent x M); UDP drops = kernel RcvbufErrors (system-wide); \
         load = 1-min load average (other jobs share the cores)"
    );
    println!();
    println!(
        "| scenario | phase | in pps | fwd pps | recv pps | loss % | UDP drops | srv CPU (cores) | fwd pps/core | e2e p50 / p95 / p99 ms | srv p50 / p95 / p99 ms | client CPU (cores) | load |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let sent = c(r, "sent");
        let recv = c(r, "recv");
        let m = c(r, "m");
        let loss = if sent > 0.0 {
            (1.0 - recv / (sent * m)).max(0.0) * 100.0
        } else {
            f64::NAN
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {:.2} | {:.0} | {:.2} / {:.2} / {:.2} | {:.3} / {:.3} / {:.3} | {:.2} | {:.1} |",
            r.scenario,
            r.phase,
            r.in_pps,
            r.out_pps,
            recv / r.secs,
            loss,
            r.udp_drops,
            r.cpu_cores,
            r.per_core,
            c(r, "p50"),
            c(r, "p95"),
            c(r, "p99"),
            r.srv.p50,
            r.srv.p95,
            r.srv.p99,
            c(r, "cpu") / r.secs,
            r.load,
        );
    }
    println!();
    println!("Worst single packets and SFU queue overruns:");
    for r in rows {
        println!(
            "  {} {}: max e2e {:.2} ms, max srv {:.2} ms, broadcast lagged drops {}",
            r.scenario,
            r.phase,
            c(r, "max"),
            r.srv.max,
            r.dropped
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Client process

struct ClientCfg {
    addr: SocketAddr,
    label: String,
    n: usize,
    m: usize,
    secs: u64,
    window: u64,
    /// Publisher straight to subscriber, no server (baseline).
    direct: bool,
}

impl ClientCfg {
    fn parse(a: &[String]) -> Res<ClientCfg> {
        let get = |i: usize| a.get(i).ok_or("missing client argument");
        Ok(ClientCfg {
            addr: get(0)?.parse()?,
            label: get(1)?.clone(),
            n: get(2)?.parse()?,
            m: get(3)?.parse()?,
            secs: get(4)?.parse()?,
            window: get(5)?.parse()?,
            direct: a.get(6).is_some_and(|d| d == "direct"),
        })
    }
}

struct Shared {
    epoch: Instant,
    m: usize,
    mode: AtomicU8,
    phase: AtomicU8,
    recording: AtomicBool,
    sent: AtomicU64,
    recv: AtomicU64,
    /// Per (publisher, subscriber): 1 + highest packet index received.
    hi: Vec<AtomicU64>,
    /// Per publisher: a subscriber advanced.
    progress: Vec<Notify>,
    lat: Mutex<Vec<u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    /// Lowest "highest index received" over publisher `p`'s subscribers.
    fn low(&self, p: usize) -> u64 {
        self.hi[p * self.m..(p + 1) * self.m]
            .iter()
            .map(|h| h.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

struct Handler {
    gathered: Arc<Notify>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(t);
    }
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    gathered: Arc<Notify>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

/// The clients' codecs without generic NACK feedback (PLI/FIR kept): `SFU_BENCH_NO_NACK`.
fn media_engine_without_nack() -> Res<rtc::peer_connection::configuration::media_engine::MediaEngine>
{
    use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodecParameters};
    let mut me = rtc::peer_connection::configuration::media_engine::MediaEngine::default();
    let fb = [("goog-remb", ""), ("ccm", "fir"), ("nack", "pli")]
        .iter()
        .map(|(t, p)| RTCPFeedback {
            typ: (*t).to_owned(),
            parameter: (*p).to_owned(),
        })
        .collect();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                rtcp_feedback: fb,
                ..h264_codec()
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(me)
}

async fn client_peer() -> Res<Client> {
    let mut me = if std::env::var_os("SFU_BENCH_NO_NACK").is_some() {
        media_engine_without_nack()?
    } else {
        cohost::rtc::media_engine()?
    };
    let reg = register_default_interceptors(Registry::new(), &mut me)?;
    let se = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let gathered = Arc::new(Notify::new());
    let (ttx, trx) = mpsc::unbounded_channel();
    let h = Arc::new(Handler {
        gathered: gathered.clone(),
        tracks: ttx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(se)
        .with_interceptor_registry(reg)
        .with_handler(h as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await?;
    Ok(Client {
        pc: Arc::new(pc),
        gathered,
        tracks: trx,
    })
}

impl Client {
    async fn offer(&self) -> Res<String> {
        let offer = self.pc.create_offer(None).await?;
        let g = self.gathered.notified();
        self.pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(3), g).await;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or("no local description")?
            .sdp)
    }
    async fn set_answer(&self, sdp: String) -> Res<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }
}

async fn token(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    id: &str,
    role: &str,
) -> Res<String> {
    let v: serde_json::Value = http
        .post(format!("{base}/api/tokens"))
        .bearer_auth(API_KEY)
        .json(&json!({"room": room, "identity": id, "role": role}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["token"].as_str().ok_or("no token")?.to_owned())
}

async fn post_sdp(http: &reqwest::Client, url: &str, token: &str, sdp: &str) -> Res<(u16, String)> {
    let r = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// One synthetic RTP packet: FU-A fragment with the send time, index and phase stamped in.
fn packet(
    ssrc: u32,
    seq: u16,
    ts: u32,
    key: bool,
    first: bool,
    last: bool,
    stamp: (u64, u64, u8),
) -> rtp::Packet {
    let mut b = BytesMut::with_capacity(PAYLOAD);
    b.put_u8(0x7c); // FU-A, NRI 3
    b.put_u8(u8::from(first) << 7 | u8::from(last) << 6 | if key { 5 } else { 1 });
    b.put_u64_le(stamp.0);
    b.put_u64_le(stamp.1);
    b.put_u8(stamp.2);
    b.resize(PAYLOAD, 0xa5);
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker: last,
            payload_type: 102,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: b.freeze(),
    }
}

async fn publish_loop(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    p: usize,
    s: Arc<Shared>,
    window: u64,
) {
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut idx: u64 = 0;
    let mut since_key: u64 = 0;
    let period = Duration::from_nanos(1_000_000_000 / FPS);
    let mut next = tokio::time::Instant::now();
    loop {
        let mode = s.mode.load(Ordering::Relaxed);
        match mode {
            MODE_STOP => return,
            MODE_PACED => {
                tokio::time::sleep_until(next).await;
                next += period;
                let now = tokio::time::Instant::now();
                if next + Duration::from_millis(100) < now {
                    next = now;
                }
            }
            _ => next = tokio::time::Instant::now(),
        }
        let key = since_key == 0;
        since_key = (since_key + 1) % GOP;
        let count = if key { KEY_FRAME_PKTS } else { P_FRAME_PKTS };
        for k in 0..count {
            if mode == MODE_MAX {
                while idx >= s.low(p) + window {
                    if s.mode.load(Ordering::Relaxed) == MODE_STOP {
                        return;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(2), s.progress[p].notified())
                            .await;
                }
            }
            let stamp = (s.now_ns(), idx, s.phase.load(Ordering::Relaxed));
            let pkt = packet(ssrc, seq, ts, key, k == 0, k + 1 == count, stamp);
            if track.write_rtp(pkt).await.is_err() {
                if idx > 0 {
                    return;
                }
                // Not bound to the connection yet.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            s.sent.fetch_add(1, Ordering::Relaxed);
            seq = seq.wrapping_add(1);
            idx += 1;
        }
        ts = ts.wrapping_add(90_000 / FPS as u32);
    }
}

async fn subscribe_loop(track: Arc<dyn TrackRemote>, slot: usize, p: usize, s: Arc<Shared>) {
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        let b: &Bytes = &pkt.payload;
        if b.len() < STAMP {
            continue;
        }
        let now = s.now_ns();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let (sent, idx, phase) = (word(2), word(10), b[18]);
        s.recv.fetch_add(1, Ordering::Relaxed);
        s.hi[slot].fetch_max(idx + 1, Ordering::AcqRel);
        s.progress[p].notify_one();
        if s.recording.load(Ordering::Relaxed) && phase == s.phase.load(Ordering::Relaxed) {
            s.lat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(now.saturating_sub(sent));
        }
    }
}

async fn client_main(cfg: ClientCfg) -> Res<()> {
    let s = Arc::new(Shared {
        epoch: Instant::now(),
        m: cfg.m,
        mode: AtomicU8::new(MODE_PACED),
        phase: AtomicU8::new(0),
        recording: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        recv: AtomicU64::new(0),
        hi: (0..cfg.n * cfg.m).map(|_| AtomicU64::new(0)).collect(),
        progress: (0..cfg.n).map(|_| Notify::new()).collect(),
        lat: Mutex::new(Vec::new()),
    });
    let setup = Instant::now();
    let peers = if cfg.direct {
        setup_direct(&s, cfg.window).await?
    } else {
        setup_via_server(&cfg, &s).await?
    };
    // Every subscriber started (after a keyframe).
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.hi.iter().any(|h| h.load(Ordering::Relaxed) == 0) {
        if Instant::now() > deadline {
            return Err("not every subscriber receives media".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "client {}x{}{}: {} peer connections up in {:.1} s",
        cfg.n,
        cfg.m,
        if cfg.direct { " direct" } else { "" },
        peers.len(),
        setup.elapsed().as_secs_f64()
    );
    run_phases(&cfg, &s).await;
    for pc in peers {
        let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
    }
    Ok(())
}

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .into(),
        rtcp_feedback: vec![],
    }
}

/// A publisher peer with its synthetic video track.
async fn publisher_peer() -> Res<(Client, Arc<TrackLocalStaticRTP>, u32)> {
    let c = client_peer().await?;
    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "cam".into(),
        "cam-video".into(),
        "cam-video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: h264_codec(),
            ..Default::default()
        }],
    )));
    c.pc.add_transceiver_from_track(
        track.clone() as Arc<dyn TrackLocal>,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            ..Default::default()
        }),
    )
    .await?;
    Ok((c, track, ssrc))
}

/// A receive-only subscriber peer.
async fn subscriber_peer(kinds: &[RtpCodecKind]) -> Res<Client> {
    let c = client_peer().await?;
    for kind in kinds {
        c.pc.add_transceiver_from_kind(
            *kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    }
    Ok(c)
}

/// Baseline without the server: one publisher peer connected straight to one subscriber peer.
async fn setup_direct(s: &Arc<Shared>, window: u64) -> Res<Vec<Arc<dyn PeerConnection>>> {
    let (pc, track, ssrc) = publisher_peer().await?;
    let mut sc = subscriber_peer(&[RtpCodecKind::Video]).await?;
    let offer = pc.offer().await?;
    sc.pc
        .set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = sc.pc.create_answer(None).await?;
    let g = sc.gathered.notified();
    sc.pc.set_local_description(answer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(3), g).await;
    let answer = sc
        .pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    pc.set_answer(answer).await?;
    tokio::spawn(publish_loop(track, ssrc, 0, s.clone(), window));
    let s2 = s.clone();
    let peers = vec![pc.pc.clone(), sc.pc.clone()];
    tokio::spawn(async move {
        if let Some(track) = sc.tracks.recv().await {
            subscribe_loop(track, 0, 0, s2).await;
        }
    });
    Ok(peers)
}

async fn setup_via_server(cfg: &ClientCfg, s: &Arc<Shared>) -> Res<Vec<Arc<dyn PeerConnection>>> {
    let base = format!("http://{}", cfg.addr);
    let http = reqwest::Client::new();
    let mut peers: Vec<Arc<dyn PeerConnection>> = Vec::new();
    // One room per publisher (WHIP as "host"), subscribers by WHEP.
    for p in 0..cfg.n {
        let room = format!("{}-p{p}", cfg.label);
        let tok = token(&http, &base, &room, "cam", "host").await?;
        let (c, track, ssrc) = publisher_peer().await?;
        let offer = c.offer().await?;
        let (status, body) = post_sdp(&http, &format!("{base}/whip/{room}"), &tok, &offer).await?;
        if status != 201 {
            return Err(format!("WHIP {status}: {body}").into());
        }
        c.set_answer(body).await?;
        tokio::spawn(publish_loop(track, ssrc, p, s.clone(), cfg.window));
        peers.push(c.pc.clone());
    }
    for p in 0..cfg.n {
        let room = format!("{}-p{p}", cfg.label);
        for j in 0..cfg.m {
            let tok = token(&http, &base, &room, &format!("w{j}"), "guest").await?;
            let mut c = subscriber_peer(&[RtpCodecKind::Video, RtpCodecKind::Audio]).await?;
            let offer = c.offer().await?;
            let url = format!("{base}/whep/{room}/cam");
            let mut tries = 0;
            let body = loop {
                let (status, body) = post_sdp(&http, &url, &tok, &offer).await?;
                match status {
                    201 => break body,
                    404 if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => return Err(format!("WHEP {status}: {body}").into()),
                }
            };
            c.set_answer(body).await?;
            // The track appears once the SFU forwards a keyframe: wait for it in the background.
            let s2 = s.clone();
            peers.push(c.pc.clone());
            tokio::spawn(async move {
                if let Some(track) = c.tracks.recv().await {
                    subscribe_loop(track, p * s2.m + j, p, s2).await;
                }
            });
        }
    }
    Ok(peers)
}

/// The measured phases; prints START/END/RESULT lines for the server process.
async fn run_phases(cfg: &ClientCfg, s: &Shared) {
    for (id, name, mode) in [(1u8, "paced", MODE_PACED), (2, "max", MODE_MAX)] {
        s.phase.store(id, Ordering::Relaxed);
        s.mode.store(mode, Ordering::Relaxed);
        tokio::time::sleep(WARMUP).await;
        s.lat.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let (sent0, recv0, cpu0) = (
            s.sent.load(Ordering::Relaxed),
            s.recv.load(Ordering::Relaxed),
            process_cpu(),
        );
        s.recording.store(true, Ordering::Relaxed);
        println!("START {name}");
        tokio::time::sleep(Duration::from_secs(cfg.secs)).await;
        println!("END {name}");
        s.recording.store(false, Ordering::Relaxed);
        let (sent1, recv1, cpu1) = (
            s.sent.load(Ordering::Relaxed),
            s.recv.load(Ordering::Relaxed),
            process_cpu(),
        );
        let lat = Lat::of(std::mem::take(
            &mut *s.lat.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        println!(
            "RESULT {name} m={} sent={} recv={} cpu={} {}",
            cfg.m,
            sent1 - sent0,
            recv1 - recv0,
            cpu1.saturating_sub(cpu0).as_secs_f64(),
            lat.encode()
        );
    }
    s.mode.store(MODE_STOP, Ordering::Relaxed);
}
