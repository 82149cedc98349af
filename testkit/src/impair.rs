//! Network impairment for tests and benches: loss (random and bursty), delay, jitter and a
//! bandwidth cap with a tail-drop queue, made in user space (this kernel has no `netem`).
//!
//! Two layers:
//!
//! - [`Link`]: a pure, deterministic model of one direction of a path. It owns no socket and
//!   reads no clock: [`Link::on_packet`] is given the arrival time and the packet and answers
//!   [`Verdict::Drop`] or [`Verdict::SendAt`]. The same [`LinkConfig`], seed and packet sequence
//!   always give the same verdicts (randomness is `StdRng::seed_from_u64(seed)`). Which packets
//!   are impaired is chosen by [`Impair`] and [`classify`] (RFC 7983 demultiplexing); the others
//!   pass untouched and undelayed, so by default ([`Impair::Media`]) ICE and DTLS still connect
//!   while RTP and RTCP suffer.
//! - [`Relay`]: an async UDP relay on 127.0.0.1 between ONE client peer and ONE server peer,
//!   each direction impaired by its own [`Link`]. The peers are pointed at it by rewriting the
//!   SDP candidates ([`Relay::rewrite_offer`], [`Relay::rewrite_answer`]); the impairment can be
//!   changed while media flows ([`Relay::set_up`], [`Relay::set_down`]).
//!
//! ```text
//!   client peer ──▶ client_side ══ up Link ══▶ server_side ──▶ server's real candidate
//!   client peer ◀── client_side ◀═ down Link ═ server_side ◀── server
//! ```
//!
//! From a test (see `tests/impair.rs`):
//!
//! ```ignore
//! let s = start_server().await;
//! let relay = Relay::start(LinkConfig::random_loss(0.03), LinkConfig::clean(), 1).await;
//! let (_peer, _resource, stop, _sender) =
//!     whip_publish_via(&s, "room", "guest-1", "guest", 320, 240, &relay).await;
//! // ... subscribe with `whep_subscribe` / `whep_subscribe_via`, assert on decoded media ...
//! relay.set_up(LinkConfig::burst_loss(0.05, 3.0).with_delay(Duration::from_millis(40)));
//! let (up, down) = relay.stats();
//! assert!(up.dropped_rtp > 0);
//! ```
//!
//! From a bench: build the same way (`whip_publish_via` for publishers behind a bad uplink,
//! `whep_subscribe_via` for viewers behind a bad downlink), or drive a [`Link`] directly in a
//! simulation loop with synthetic `Instant`s (no sleeping) to replay a loss pattern exactly.
//! A relay forwards well beyond 5 Mbit/s in a debug build; give each impaired peer its own.
//!
//! Model details:
//! - Loss: each impaired packet is dropped with probability `loss`, and, when `burst` is set,
//!   by a Gilbert–Elliott chain (per packet: state transition, then loss by the new state's
//!   probability). Lost packets never enter the bandwidth queue.
//! - Bandwidth cap: a packet finishes serialization at `max(now, previous finish) + len*8/rate`
//!   and is tail-dropped when the bytes still queued (not finished at `now`) plus its own
//!   length exceed `queue_bytes` (a packet arriving at an idle link is always admitted).
//! - Delay and jitter: `delay` plus an independent uniform `0..=jitter` per packet is added to
//!   the departure, so jitter reorders packets; without jitter a direction stays FIFO (packets
//!   that are not impaired, e.g. STUN under [`Impair::Media`], skip the delay and so overtake
//!   delayed ones; lowering the delay live can reorder the packets in flight too).
//! - The relay learns the client's address from the offer's candidate first, then from the
//!   source of the latest packet on `client_side`; the server's from the answer's first UDP
//!   candidate. Nothing special is needed in webrtc-rs: both peers simply see the relay's
//!   address as the remote candidate and as the source of every check.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

use super::{add_sender, client_peer, post_sdp, ClientPeer, Sender, TestServer};

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

/// What a datagram on a WebRTC 5-tuple is (RFC 7983 first-byte demultiplexing, RFC 5761 for
/// RTP vs RTCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// Classifies a datagram: first byte 0..=3 STUN, 20..=63 DTLS, 128..=191 RTP/RTCP (RTCP when the
/// second byte, the packet type, is 192..=223); anything else (and an empty datagram) is
/// [`Kind::Other`].
pub fn classify(pkt: &[u8]) -> Kind {
    match pkt.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => match pkt.get(1) {
            Some(192..=223) => Kind::Rtcp,
            _ => Kind::Rtp,
        },
        _ => Kind::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A Gilbert–Elliott two-state loss model (per-packet transition probabilities and the loss
/// probability in each state).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    pub p_good_to_bad: f64,
    pub p_bad_to_good: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The long-run share of packets lost.
    pub fn average_loss(&self) -> f64 {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        if sum <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p_good_to_bad / sum;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// Which packets a [`Link`] impairs; the others pass untouched and undelayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impair {
    /// RTP only (RTCP feedback, ICE and DTLS pass).
    Rtp,
    /// RTP and RTCP (ICE and DTLS pass, so connections still set up). The default.
    Media,
    /// Every datagram, ICE and DTLS included.
    All,
}

impl Impair {
    fn covers(self, kind: Kind) -> bool {
        match self {
            Impair::Rtp => kind == Kind::Rtp,
            Impair::Media => matches!(kind, Kind::Rtp | Kind::Rtcp),
            Impair::All => true,
        }
    }
}

/// One direction's impairment.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Random (independent) loss probability, 0..1.
    pub loss: f64,
    /// Bursty loss on top of `loss`.
    pub burst: Option<GilbertElliott>,
    /// Fixed one-way delay of impaired packets.
    pub delay: Duration,
    /// Each impaired packet gets an extra independent uniform `0..=jitter` delay (reorders).
    pub jitter: Duration,
    /// Bandwidth cap in kbit/s (`Some(0)`: a dead link, every impaired packet is dropped).
    pub rate_kbps: Option<u32>,
    /// Tail-drop queue in front of the cap, in bytes.
    pub queue_bytes: usize,
    /// Which packets are impaired.
    pub impair: Impair,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self::clean()
    }
}

impl LinkConfig {
    /// No impairment at all.
    pub fn clean() -> Self {
        LinkConfig {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_kbps: None,
            queue_bytes: 0,
            impair: Impair::Media,
        }
    }

    /// Independent loss with probability `p`.
    pub fn random_loss(p: f64) -> Self {
        Self::clean().with_loss(p)
    }

    /// Bursty loss: a Gilbert model (no loss in the good state, all lost in the bad one) whose
    /// long-run loss is `avg` and whose bursts of consecutive losses last `mean_burst_len`
    /// packets on average (at least 1).
    pub fn burst_loss(avg: f64, mean_burst_len: f64) -> Self {
        let avg = if avg.is_finite() {
            avg.clamp(0.0, 0.999)
        } else {
            0.0
        };
        let len = if mean_burst_len.is_finite() {
            mean_burst_len.max(1.0)
        } else {
            1.0
        };
        let p_bad_to_good = 1.0 / len;
        let p_good_to_bad = (avg * p_bad_to_good / (1.0 - avg)).min(1.0);
        Self::clean().with_burst(GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        })
    }

    /// Uniform `0..=ms` extra delay per packet (reordering), no fixed delay.
    pub fn jitter(ms: u64) -> Self {
        Self::clean().with_jitter(Duration::from_millis(ms))
    }

    /// A `kbps` bandwidth cap with a 100 ms tail-drop queue.
    pub fn cap(kbps: u32) -> Self {
        Self::clean().with_rate_kbps(kbps)
    }

    pub fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    pub fn with_burst(mut self, ge: GilbertElliott) -> Self {
        self.burst = Some(ge);
        self
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn with_jitter(mut self, j: Duration) -> Self {
        self.jitter = j;
        self
    }

    /// Sets the cap; when no queue is set yet, also a queue of 100 ms at that rate (at least
    /// 1500 bytes).
    pub fn with_rate_kbps(mut self, kbps: u32) -> Self {
        self.rate_kbps = Some(kbps);
        if self.queue_bytes == 0 {
            self.queue_bytes = (kbps as usize * 1000 / 8 / 10).max(1500);
        }
        self
    }

    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    pub fn with_impair(mut self, which: Impair) -> Self {
        self.impair = which;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The link model
// ---------------------------------------------------------------------------------------------

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random (`loss`) loss.
    Random,
    /// Gilbert–Elliott (`burst`) loss.
    Burst,
    /// The bandwidth cap's queue was full (or the cap is 0).
    Queue,
}

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop(DropReason),
    /// Deliver it at this time (`now` for packets that are not impaired).
    SendAt(Instant),
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub seen: u64,
    /// Of those, packets subject to impairment ([`Impair`]).
    pub impaired: u64,
    /// Dropped by random or burst loss.
    pub dropped_loss: u64,
    /// Tail-dropped by the bandwidth cap's queue.
    pub dropped_queue: u64,
    /// Of all drops, RTP packets.
    pub dropped_rtp: u64,
    /// Bytes offered to the link.
    pub bytes_seen: u64,
    /// Relay only: packets actually sent on (0 for a bare [`Link`]).
    pub sent: u64,
    /// Relay only: packets not sent because the destination was not known yet or the send
    /// failed.
    pub unroutable: u64,
}

impl LinkStats {
    /// All drops by the model.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue
    }
}

/// One direction of an impaired path: a pure function of (config, seed, packets, times).
pub struct Link {
    cfg: LinkConfig,
    rng: StdRng,
    ge_bad: bool,
    /// Serialization finish time of the last packet through the cap.
    busy_until: Option<Instant>,
    /// Packets not yet serialized: (finish time, length).
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    stats: LinkStats,
}

impl Link {
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Link {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            ge_bad: false,
            busy_until: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            stats: LinkStats::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Changes the impairment; the random stream, burst state and queue carry on.
    pub fn set_config(&mut self, cfg: LinkConfig) {
        if cfg.burst.is_none() {
            self.ge_bad = false;
        }
        self.cfg = cfg;
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Decides the fate of `pkt` arriving at `now`.
    pub fn on_packet(&mut self, now: Instant, pkt: &[u8]) -> Verdict {
        self.stats.seen += 1;
        self.stats.bytes_seen += pkt.len() as u64;
        let kind = classify(pkt);
        if !self.cfg.impair.covers(kind) {
            return Verdict::SendAt(now);
        }
        self.stats.impaired += 1;
        match self.decide(now, pkt.len()) {
            Ok(at) => Verdict::SendAt(at),
            Err(reason) => {
                if reason == DropReason::Queue {
                    self.stats.dropped_queue += 1;
                } else {
                    self.stats.dropped_loss += 1;
                }
                if kind == Kind::Rtp {
                    self.stats.dropped_rtp += 1;
                }
                Verdict::Drop(reason)
            }
        }
    }

    fn decide(&mut self, now: Instant, len: usize) -> Result<Instant, DropReason> {
        // Loss first: the same number of draws per packet whatever the outcome.
        let random_lost = self.cfg.loss > 0.0 && self.rng.gen::<f64>() < self.cfg.loss;
        let mut burst_lost = false;
        if let Some(ge) = self.cfg.burst {
            let u = self.rng.gen::<f64>();
            self.ge_bad = if self.ge_bad {
                u >= ge.p_bad_to_good
            } else {
                u < ge.p_good_to_bad
            };
            let p = if self.ge_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
            burst_lost = self.rng.gen::<f64>() < p;
        }
        if random_lost {
            return Err(DropReason::Random);
        }
        if burst_lost {
            return Err(DropReason::Burst);
        }

        let mut at = now;
        if let Some(kbps) = self.cfg.rate_kbps {
            if kbps == 0 {
                return Err(DropReason::Queue);
            }
            while let Some(&(finish, l)) = self.queue.front() {
                if finish > now {
                    break;
                }
                self.queue.pop_front();
                self.queued_bytes -= l;
            }
            if !self.queue.is_empty() && self.queued_bytes + len > self.cfg.queue_bytes {
                return Err(DropReason::Queue);
            }
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let tx = Duration::from_nanos(len as u64 * 8 * 1_000_000 / u64::from(kbps));
            let finish = start.checked_add(tx).unwrap_or(start);
            self.busy_until = Some(finish);
            self.queue.push_back((finish, len));
            self.queued_bytes += len;
            at = finish;
        }
        at = at.checked_add(self.cfg.delay).unwrap_or(at);
        let jitter = u64::try_from(self.cfg.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter > 0 {
            let extra = Duration::from_nanos(self.rng.gen_range(0..=jitter));
            at = at.checked_add(extra).unwrap_or(at);
        }
        Ok(at)
    }
}

// ---------------------------------------------------------------------------------------------
// The UDP relay
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    unroutable: AtomicU64,
}

struct Shared {
    up: Mutex<Link>,
    down: Mutex<Link>,
    up_counters: Counters,
    down_counters: Counters,
    /// Where up packets go: the server's real candidate (from the answer).
    server_addr: Mutex<Option<SocketAddr>>,
    /// Where down packets go: the latest source seen on `client_side` (seeded from the offer).
    client_addr: Mutex<Option<SocketAddr>>,
    /// Set once a packet came from the client, so the offer's candidate no longer overrides.
    client_learned: AtomicBool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// An impairing UDP relay between one client peer and one server peer on 127.0.0.1.
pub struct Relay {
    client_side: SocketAddr,
    server_side: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    /// Binds `client_side` (the client believes it is the server) and `server_side` (the
    /// server believes it is the client) on 127.0.0.1:0 and starts forwarding. The down link's
    /// random stream is derived from `seed` too, but differs from the up link's.
    pub async fn start(up: LinkConfig, down: LinkConfig, seed: u64) -> Relay {
        let client_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let server_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let client_side = client_sock.local_addr().unwrap();
        let server_side = server_sock.local_addr().unwrap();
        let shared = Arc::new(Shared {
            up: Mutex::new(Link::new(up, seed)),
            down: Mutex::new(Link::new(down, seed ^ 0x9E37_79B9_7F4A_7C15)),
            up_counters: Counters::default(),
            down_counters: Counters::default(),
            server_addr: Mutex::new(None),
            client_addr: Mutex::new(None),
            client_learned: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(forward(
                client_sock.clone(),
                server_sock.clone(),
                shared.clone(),
                Dir::Up,
            )),
            tokio::spawn(forward(server_sock, client_sock, shared.clone(), Dir::Down)),
        ];
        Relay {
            client_side,
            server_side,
            shared,
            tasks,
        }
    }

    /// The address the client sends to (it believes this is the server).
    pub fn client_side(&self) -> SocketAddr {
        self.client_side
    }

    /// The address the server sends to (it believes this is the client).
    pub fn server_side(&self) -> SocketAddr {
        self.server_side
    }

    /// Sets where up packets go (what [`Relay::rewrite_answer`] learns from an answer).
    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.shared.server_addr.lock().unwrap() = Some(addr);
    }

    /// The upstream (server) address, once known.
    pub fn upstream(&self) -> Option<SocketAddr> {
        *self.shared.server_addr.lock().unwrap()
    }

    /// The client's offer as the server should see it: one UDP candidate per media section,
    /// pointing at `server_side`; other candidates dropped. The offer's own candidate address
    /// is remembered as the client's address until the client sends something.
    pub fn rewrite_offer(&self, sdp: &str) -> String {
        if let Some(a) = first_udp_candidate(sdp) {
            if !self.shared.client_learned.load(Ordering::Relaxed) {
                *self.shared.client_addr.lock().unwrap() = Some(a);
            }
        }
        rewrite_candidates(sdp, self.server_side)
    }

    /// The server's answer as the client should see it: remembers the server's real address
    /// (its first UDP candidate) as the upstream destination and points the candidate at
    /// `client_side`.
    pub fn rewrite_answer(&self, sdp: &str) -> String {
        if let Some(a) = first_udp_candidate(sdp) {
            self.set_upstream(a);
        }
        rewrite_candidates(sdp, self.client_side)
    }

    /// (up, down) counters.
    pub fn stats(&self) -> (LinkStats, LinkStats) {
        let get = |l: &Mutex<Link>, c: &Counters| {
            let mut s = l.lock().unwrap().stats();
            s.sent = c.sent.load(Ordering::Relaxed);
            s.unroutable = c.unroutable.load(Ordering::Relaxed);
            s
        };
        (
            get(&self.shared.up, &self.shared.up_counters),
            get(&self.shared.down, &self.shared.down_counters),
        )
    }

    /// Changes the uplink impairment live (packets already queued keep their times).
    pub fn set_up(&self, cfg: LinkConfig) {
        self.shared.up.lock().unwrap().set_config(cfg);
    }

    /// Changes the downlink impairment live.
    pub fn set_down(&self, cfg: LinkConfig) {
        self.shared.down.lock().unwrap().set_config(cfg);
    }
}

/// A packet waiting for its departure time; ordered by (time, arrival order).
struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One direction: receives on `rx`, asks the link, holds delayed packets in a heap and sends
/// them from `tx` when due.
async fn forward(rx: Arc<UdpSocket>, tx: Arc<UdpSocket>, shared: Arc<Shared>, dir: Dir) {
    let (link, counters) = match dir {
        Dir::Up => (&shared.up, &shared.up_counters),
        Dir::Down => (&shared.down, &shared.down_counters),
    };
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let next = heap.peek().map(|p| p.0.at);
        tokio::select! {
            biased;
            _ = sleep_until_opt(next) => {}
            r = rx.recv_from(&mut buf) => {
                // Errors (e.g. ICMP port unreachable from an earlier send) are not fatal.
                if let Ok((n, from)) = r {
                    if dir == Dir::Up {
                        *shared.client_addr.lock().unwrap() = Some(from);
                        shared.client_learned.store(true, Ordering::Relaxed);
                    }
                    let pkt = &buf[..n];
                    let verdict = link.lock().unwrap().on_packet(Instant::now(), pkt);
                    if let Verdict::SendAt(at) = verdict {
                        heap.push(Reverse(Pending { at, seq, data: pkt.to_vec() }));
                        seq += 1;
                    }
                }
            }
        }
        // Send everything due, in (time, arrival) order.
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.0.at <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            let dest = match dir {
                Dir::Up => *shared.server_addr.lock().unwrap(),
                Dir::Down => *shared.client_addr.lock().unwrap(),
            };
            let ok = match dest {
                Some(d) => tx.send_to(&p.data, d).await.is_ok(),
                None => false,
            };
            if ok {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.unroutable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// SDP candidate rewriting
// ---------------------------------------------------------------------------------------------

/// The fields of an `a=candidate:` line (without the `a=candidate:` prefix), if it is a
/// component-1 UDP candidate with a literal IP address.
fn udp_candidate_addr(fields: &[&str]) -> Option<SocketAddr> {
    if fields.len() < 6 || fields[1] != "1" || !fields[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: std::net::IpAddr = fields[4].parse().ok()?;
    let port: u16 = fields[5].parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn candidate_fields(line: &str) -> Option<Vec<&str>> {
    line.strip_prefix("a=candidate:")
        .map(|rest| rest.split_whitespace().collect())
}

/// The first component-1 UDP candidate's address in `sdp`.
pub fn first_udp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines()
        .filter_map(|l| candidate_fields(l.trim_end()))
        .find_map(|f| udp_candidate_addr(&f))
}

/// Rewrites `sdp` so that each media section has exactly one candidate, a UDP host candidate
/// at `to`, and at most one `a=end-of-candidates`. Sections without candidates stay so
/// (BUNDLE); line endings are kept.
pub fn rewrite_candidates(sdp: &str, to: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut kept = false;
    let mut eoc = false;
    for raw in sdp.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\r', '\n']);
        let ending = &raw[line.len()..];
        if line.starts_with("m=") {
            kept = false;
            eoc = false;
        }
        if let Some(f) = candidate_fields(line) {
            if kept || udp_candidate_addr(&f).is_none() {
                continue;
            }
            kept = true;
            // foundation component transport priority address port typ host, then the
            // extensions other than raddr/rport (which would name the real address).
            let mut new = format!(
                "a=candidate:{} {} {} {} {} {} typ host",
                f[0],
                f[1],
                f[2],
                f[3],
                to.ip(),
                to.port()
            );
            let mut i = 6;
            if f.get(6) == Some(&"typ") {
                i = 8;
            }
            while i + 1 < f.len() {
                if f[i] != "raddr" && f[i] != "rport" {
                    new.push(' ');
                    new.push_str(f[i]);
                    new.push(' ');
                    new.push_str(f[i + 1]);
                }
                i += 2;
            }
            out.push_str(&new);
            out.push_str(ending);
            continue;
        }
        if line == "a=end-of-candidates" {
            if eoc {
                continue;
            }
            eoc = true;
        }
        out.push_str(line);
        out.push_str(ending);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Test helpers
// ---------------------------------------------------------------------------------------------

/// Like [`super::whip_publish`], with the publisher's media through `relay` (the offer and
/// answer are rewritten); also returns the [`Sender`] (SSRCs, capture times).
pub async fn whip_publish_via(
    s: &TestServer,
    room: &str,
    identity: &str,
    role: &str,
    w: usize,
    h: usize,
    relay: &Relay,
) -> (ClientPeer, String, Arc<AtomicBool>, Sender) {
    let token = s.token(room, identity, role).await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, identity).await;
    let offer = relay.rewrite_offer(&peer.offer().await);
    let (status, loc, body) = post_sdp(&s.url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(status, 201, "WHIP POST: {body}");
    peer.set_answer(&relay.rewrite_answer(&body)).await;
    let stop = Arc::new(AtomicBool::new(false));
    sender.spawn(w, h, 120.0, stop.clone());
    (peer, s.url(&loc.expect("Location header")), stop, sender)
}

/// A WHEP subscriber with its media through `relay`: of the room's program (`target: None`,
/// `/whep/{room}`) or of one co-host (`Some(identity)`, `/whep/{room}/{identity}`). Retries for
/// up to ~10 s while the server answers 404/503 (tracks or program not up yet). Returns the
/// peer (tracks arrive on `peer.tracks`) and the resource URL.
pub async fn whep_subscribe_via(
    s: &TestServer,
    room: &str,
    target: Option<&str>,
    token: &str,
    relay: &Relay,
) -> (ClientPeer, String) {
    let peer = client_peer().await;
    peer.add_recv().await;
    let offer = relay.rewrite_offer(&peer.offer().await);
    let path = match target {
        None => format!("/whep/{room}"),
        Some(id) => format!("/whep/{room}/{id}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, loc, body) = post_sdp(&s.url(&path), token, &offer).await;
        if (status == 404 || status == 503) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 201, "WHEP POST {path}: {body}");
        peer.set_answer(&relay.rewrite_answer(&body)).await;
        return (peer, s.url(&loc.expect("Location header")));
    }
}
