//! The network impairment kit (`testkit/src/impair.rs`): the pure link model's loss, burst,
//! jitter and bandwidth-cap behaviour; the UDP relay's forwarding and counters through real
//! sockets; and a WHIP publisher behind a lossy relayed uplink whose video still reaches a WHEP
//! subscriber and decodes (which proves the candidate rewriting steers the media through it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::impair::*;
use common::*;

/// An RTP-looking packet (version 2, PT 96) carrying `seq`, `len` bytes long.
fn rtp(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(12)];
    p[0] = 0x80;
    p[1] = 96;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn drops(cfg: &LinkConfig, seed: u64, n: usize) -> Vec<bool> {
    let mut link = Link::new(cfg.clone(), seed);
    let t0 = Instant::now();
    (0..n)
        .map(|i| {
            let now = t0 + Duration::from_millis(i as u64);
            matches!(link.on_packet(now, &rtp(i as u16, 200)), Verdict::Drop(_))
        })
        .collect()
}

#[test]
fn classify_follows_rfc7983() {
    assert_eq!(classify(&[0, 1, 0, 0]), Kind::Stun);
    assert_eq!(classify(&[22, 0xfe, 0xfd]), Kind::Dtls);
    assert_eq!(classify(&[0x80, 96]), Kind::Rtp);
    assert_eq!(classify(&[0x80, 96 | 0x80]), Kind::Rtp); // marker bit, PT 96
    assert_eq!(classify(&[0x81, 200]), Kind::Rtcp); // SR
    assert_eq!(classify(&[0x81, 205]), Kind::Rtcp); // RTPFB (NACK)
    assert_eq!(classify(&[0x80]), Kind::Rtp);
    assert_eq!(classify(&[]), Kind::Other);
    assert_eq!(classify(&[64, 0]), Kind::Other);
    assert_eq!(classify(&[255, 0]), Kind::Other);
}

#[test]
fn random_loss_rate_is_close_to_target() {
    let cfg = LinkConfig::random_loss(0.03);
    let d = drops(&cfg, 42, 20_000);
    let rate = d.iter().filter(|x| **x).count() as f64 / d.len() as f64;
    assert!((0.025..=0.035).contains(&rate), "loss {rate}");
    let mut link = Link::new(cfg, 42);
    let t0 = Instant::now();
    for i in 0..20_000u32 {
        link.on_packet(t0, &rtp(i as u16, 100));
    }
    let s = link.stats();
    assert_eq!(s.seen, 20_000);
    assert_eq!(s.impaired, 20_000);
    assert_eq!(s.dropped_loss, s.dropped_rtp);
    assert_eq!(s.dropped_queue, 0);
}

#[test]
fn same_seed_same_pattern_other_seed_other_pattern() {
    let cfg = LinkConfig::random_loss(0.05).with_jitter(Duration::from_millis(10));
    let a = drops(&cfg, 7, 5000);
    let b = drops(&cfg, 7, 5000);
    let c = drops(&cfg, 8, 5000);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Departure times too.
    let times = |seed| {
        let mut l = Link::new(cfg.clone(), seed);
        let t0 = Instant::now();
        (0..1000)
            .map(|i| match l.on_packet(t0, &rtp(i, 100)) {
                Verdict::SendAt(t) => Some(t - t0),
                Verdict::Drop(_) => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(times(3), times(3));
    let burst = LinkConfig::burst_loss(0.05, 4.0);
    assert_eq!(drops(&burst, 1, 5000), drops(&burst, 1, 5000));
}

#[test]
fn stun_and_dtls_pass_untouched_under_media() {
    let cfg = LinkConfig::random_loss(0.5)
        .with_burst(GilbertElliott {
            p_good_to_bad: 0.5,
            p_bad_to_good: 0.1,
            loss_good: 0.5,
            loss_bad: 1.0,
        })
        .with_delay(Duration::from_millis(100))
        .with_rate_kbps(10);
    assert_eq!(cfg.impair, Impair::Media);
    let mut link = Link::new(cfg, 9);
    let t0 = Instant::now();
    let stun = [0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    let dtls = [22u8, 0xfe, 0xfd, 0, 0];
    let rtcp = [0x81u8, 201, 0, 1];
    let mut rtp_dropped = 0;
    let mut rtcp_dropped = 0;
    for i in 0..2000u16 {
        let now = t0 + Duration::from_millis(u64::from(i));
        assert_eq!(link.on_packet(now, &stun), Verdict::SendAt(now));
        assert_eq!(link.on_packet(now, &dtls), Verdict::SendAt(now));
        if let Verdict::Drop(_) = link.on_packet(now, &rtp(i, 300)) {
            rtp_dropped += 1;
        }
        if let Verdict::Drop(_) = link.on_packet(now, &rtcp) {
            rtcp_dropped += 1;
        }
    }
    assert!(rtp_dropped > 1000, "{rtp_dropped}");
    assert!(rtcp_dropped > 500, "{rtcp_dropped}");
    let s = link.stats();
    assert_eq!(s.seen, 8000);
    assert_eq!(s.impaired, 4000);
    assert_eq!(s.dropped_rtp, rtp_dropped);
    assert_eq!(s.dropped(), rtp_dropped + rtcp_dropped);

    // Impair::Rtp leaves RTCP alone too; Impair::All drops STUN.
    let mut l = Link::new(LinkConfig::random_loss(1.0).with_impair(Impair::Rtp), 1);
    assert_eq!(l.on_packet(t0, &rtcp), Verdict::SendAt(t0));
    assert!(matches!(l.on_packet(t0, &rtp(1, 100)), Verdict::Drop(_)));
    let mut l = Link::new(LinkConfig::random_loss(1.0).with_impair(Impair::All), 1);
    assert_eq!(l.on_packet(t0, &stun), Verdict::Drop(DropReason::Random));
}

#[test]
fn gilbert_elliott_makes_bursts_at_the_target_average() {
    for (avg, len) in [(0.05, 3.0), (0.02, 2.0), (0.10, 5.0)] {
        let cfg = LinkConfig::burst_loss(avg, len);
        let ge = cfg.burst.unwrap();
        assert!((ge.average_loss() - avg).abs() < 1e-9);
        let d = drops(&cfg, 11, 100_000);
        let lost = d.iter().filter(|x| **x).count();
        let rate = lost as f64 / d.len() as f64;
        let bursts = d.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(d[0]);
        let mean_burst = lost as f64 / bursts as f64;
        assert!((rate - avg).abs() <= 0.01, "avg {avg}: loss {rate}");
        assert!(mean_burst > 1.5, "mean burst {mean_burst}");
        assert!(
            (mean_burst - len).abs() < len * 0.25,
            "mean burst {mean_burst} for {len}"
        );
    }
    // Random loss has bursts of ~1.
    let d = drops(&LinkConfig::random_loss(0.05), 11, 100_000);
    let lost = d.iter().filter(|x| **x).count();
    let bursts = d.windows(2).filter(|w| w[1] && !w[0]).count();
    assert!((lost as f64 / bursts as f64) < 1.1);
}

#[test]
fn jitter_reorders_but_never_sends_early() {
    let delay = Duration::from_millis(20);
    let cfg = LinkConfig::jitter(40).with_delay(delay);
    let mut link = Link::new(cfg, 5);
    let t0 = Instant::now();
    let mut departures = Vec::new();
    for i in 0..1000u16 {
        let now = t0 + Duration::from_millis(u64::from(i));
        match link.on_packet(now, &rtp(i, 500)) {
            Verdict::SendAt(at) => {
                assert!(at >= now + delay, "packet {i} leaves before now + delay");
                assert!(at <= now + delay + Duration::from_millis(40));
                departures.push(at);
            }
            Verdict::Drop(r) => panic!("jitter dropped packet {i}: {r:?}"),
        }
    }
    let reordered = departures.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(reordered > 100, "only {reordered} reorderings");
    // Without jitter a direction stays FIFO.
    let mut link = Link::new(LinkConfig::clean().with_delay(delay), 5);
    let mut last = t0;
    for i in 0..100u16 {
        let now = t0 + Duration::from_micros(u64::from(i) * 300);
        let Verdict::SendAt(at) = link.on_packet(now, &rtp(i, 500)) else {
            panic!("dropped")
        };
        assert!(at >= last);
        assert_eq!(at, now + delay);
        last = at;
    }
}

#[test]
fn bandwidth_cap_spaces_departures_and_tail_drops() {
    // 1250 bytes at 1000 kbit/s = 10 ms each; the queue holds 4 such packets.
    let cfg = LinkConfig::cap(1000).with_queue_bytes(5000);
    let mut link = Link::new(cfg, 1);
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut got = Vec::new();
    for i in 0..20u16 {
        got.push(link.on_packet(t0, &rtp(i, 1250)));
    }
    for (i, v) in got.iter().enumerate() {
        if i < 4 {
            assert_eq!(
                *v,
                Verdict::SendAt(t0 + ms(10 * (i as u64 + 1))),
                "packet {i}"
            );
        } else {
            assert_eq!(*v, Verdict::Drop(DropReason::Queue), "packet {i}");
        }
    }
    let s = link.stats();
    assert_eq!(s.dropped_queue, 16);
    assert_eq!(s.dropped_rtp, 16);
    assert_eq!(s.dropped_loss, 0);
    // 15 ms later one packet is out (finished at 10 ms): one more fits, behind the others.
    let v = link.on_packet(t0 + ms(15), &rtp(20, 1250));
    assert_eq!(v, Verdict::SendAt(t0 + ms(50)));
    assert_eq!(
        link.on_packet(t0 + ms(15), &rtp(21, 1250)),
        Verdict::Drop(DropReason::Queue)
    );
    // Once idle, packets leave at now + len*8/rate (+ delay).
    let mut link = Link::new(LinkConfig::cap(1000).with_delay(ms(30)), 1);
    let t1 = t0 + ms(1000);
    assert_eq!(
        link.on_packet(t1, &rtp(0, 500)),
        Verdict::SendAt(t1 + ms(4) + ms(30))
    );
    // Paced arrivals below the rate never queue.
    let mut link = Link::new(LinkConfig::cap(1000).with_queue_bytes(1000), 1);
    for i in 0..100u16 {
        let now = t0 + ms(u64::from(i) * 10);
        assert_eq!(
            link.on_packet(now, &rtp(i, 1000)),
            Verdict::SendAt(now + ms(8))
        );
    }
    // Back-to-back departures are spaced by len*8/rate, never closer.
    let mut link = Link::new(LinkConfig::cap(1000).with_queue_bytes(100_000), 1);
    let mut prev: Option<Instant> = None;
    for i in 0..50u16 {
        let now = t0 + Duration::from_micros(u64::from(i) * 100);
        let len = 200 + usize::from(i) * 20;
        let Verdict::SendAt(at) = link.on_packet(now, &rtp(i, len)) else {
            panic!("dropped {i}")
        };
        let tx = Duration::from_nanos(len as u64 * 8 * 1_000_000 / 1000);
        if let Some(p) = prev {
            assert_eq!(at, p.max(now) + tx);
        }
        prev = Some(at);
    }
}

#[test]
fn candidates_are_rewritten() {
    let offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host generation 0\r\n\
        a=candidate:2 1 udp 1694498815 10.0.0.5 40001 typ srflx raddr 127.0.0.1 rport 40001\r\n\
        a=candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active\r\n\
        a=end-of-candidates\r\na=end-of-candidates\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\na=end-of-candidates\r\n";
    let to: std::net::SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let out = rewrite_candidates(offer, to);
    let cands: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert_eq!(
        cands,
        [
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host generation 0",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host",
        ]
    );
    assert_eq!(out.matches("a=end-of-candidates").count(), 2);
    assert!(out.lines().all(|l| !l.contains("40001")));
    assert_eq!(out.matches("\r\n").count(), out.matches('\n').count());
    assert_eq!(
        first_udp_candidate(offer),
        Some("127.0.0.1:40001".parse().unwrap())
    );
    // Garbage does not panic.
    for s in [
        "",
        "a=candidate:",
        "a=candidate:1 1 udp x y z\n",
        "\n\n\r\n",
    ] {
        let _ = rewrite_candidates(s, to);
        assert_eq!(first_udp_candidate(s), None);
    }
}

/// Two plain UDP sockets talk through the relay: what arrives is exactly what the relay's
/// counters say it sent, and the loss is near the configured 5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_and_counts_through_real_sockets() {
    let relay = Relay::start(
        LinkConfig::random_loss(0.05),
        LinkConfig::clean().with_delay(Duration::from_millis(5)),
        1234,
    )
    .await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sa = server.local_addr().unwrap();
    // The server's address is learned from an answer's candidate, as in WebRTC.
    let answer = format!(
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=candidate:1 1 udp 1 {} {} typ host\r\n",
        sa.ip(),
        sa.port()
    );
    let rewritten = relay.rewrite_answer(&answer);
    assert_eq!(relay.upstream(), Some(sa));
    assert_eq!(first_udp_candidate(&rewritten), Some(relay.client_side()));

    let got = Arc::new(Mutex::new(Vec::<u16>::new()));
    let g = got.clone();
    let srv = server.clone();
    let echo_from = relay.server_side();
    let server_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = srv.recv_from(&mut buf).await {
            assert_eq!(from, echo_from, "the server sees the relay as the client");
            if n >= 4 {
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                g.lock().unwrap().push(seq);
                // Every 10th packet is answered: the down direction.
                if seq % 10 == 0 {
                    let _ = srv.send_to(&rtp(seq, 100), from).await;
                }
            }
        }
    });

    const N: u16 = 2000;
    let t0 = Instant::now();
    for i in 0..N {
        client
            .send_to(&rtp(i, 1000), relay.client_side())
            .await
            .unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Down packets back at the client.
    let mut echoed = HashSet::new();
    let mut buf = [0u8; 2048];
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        let (up, down) = relay.stats();
        let arrived = got.lock().unwrap().len() as u64;
        if up.seen == u64::from(N)
            && arrived == up.sent
            && down.seen == down.sent
            && echoed.len() as u64 == down.sent
        {
            break;
        }
        assert!(
            Instant::now() < settle,
            "not settled: up {up:?} down {down:?}, arrived {arrived}, echoed {}",
            echoed.len()
        );
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), client.recv_from(&mut buf)).await
        {
            assert_eq!(
                from,
                relay.client_side(),
                "the client sees the relay as the server"
            );
            assert!(n >= 4);
            assert!(echoed.insert(u16::from_be_bytes([buf[2], buf[3]])));
        }
    }
    let (up, down) = relay.stats();
    let arrived = got.lock().unwrap().clone();
    println!(
        "{N} x 1000 B through the relay in {:?} ({:.1} Mbit/s offered)",
        t0.elapsed(),
        f64::from(N) * 8000.0 / t0.elapsed().as_secs_f64() / 1e6
    );
    assert_eq!(up.seen, u64::from(N));
    assert_eq!(up.impaired, u64::from(N));
    assert_eq!(up.unroutable, 0);
    assert_eq!(arrived.len() as u64, up.seen - up.dropped());
    assert_eq!(up.dropped(), up.dropped_rtp);
    let rate = up.dropped() as f64 / f64::from(N);
    assert!((0.03..=0.07).contains(&rate), "up loss {rate}");
    // No duplicates; FIFO without jitter.
    assert!(
        arrived.windows(2).all(|w| w[0] < w[1]),
        "reordered or duplicated"
    );
    assert_eq!(down.dropped(), 0);
    assert_eq!(
        down.seen,
        arrived.iter().filter(|s| *s % 10 == 0).count() as u64
    );
    server_task.abort();
}

/// A WHIP co-host publishes through a relay with 3 % random uplink loss; a plain WHEP
/// subscriber still decodes its video, and the relay really dropped RTP on the way; a second
/// subscriber through its own (delayed) relay receives it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_behind_lossy_uplink_reaches_whep_subscriber() {
    let s = start_server().await;
    let room = "impair-room";
    let up = Relay::start(LinkConfig::random_loss(0.03), LinkConfig::clean(), 99).await;
    let (_pub_peer, _resource, stop, _sender) =
        whip_publish_via(&s, room, "lossy", "guest", 320, 240, &up).await;
    let host_token = s.token(room, "app-host", "host").await;
    let (mut sub, _) = whep_subscribe(&s, room, "lossy", &host_token).await;
    let (video, audio) = collect_both(&mut sub).await;
    eventually("video through the lossy uplink decodes", 30, || {
        decoded_at(&video, (320, 240)) >= 20
    })
    .await;
    eventually("the relay dropped RTP", 20, || up.stats().0.dropped_rtp > 0).await;
    eventually("audio arrives", 10, || audio.lock().unwrap().packets > 20).await;

    // A viewer behind its own relay (40 ms downlink delay) through `whep_subscribe_via`.
    let down = Relay::start(
        LinkConfig::clean(),
        LinkConfig::clean().with_delay(Duration::from_millis(40)),
        5,
    )
    .await;
    let host2 = s.token(room, "app-host-2", "host").await;
    let (mut sub2, _) = whep_subscribe_via(&s, room, Some("lossy"), &host2, &down).await;
    let (video2, _audio2) = collect_both(&mut sub2).await;
    eventually("video through the delayed downlink decodes", 30, || {
        decoded_at(&video2, (320, 240)) >= 10
    })
    .await;

    let (u, d) = up.stats();
    println!("publisher relay: up {u:?}\n                 down {d:?}");
    let (u2, d2) = down.stats();
    println!("viewer relay:    up {u2:?}\n                 down {d2:?}");
    assert!(u.dropped_rtp > 0 && u.sent > 100, "{u:?}");
    assert!(
        d.sent > 0,
        "the server's answers went back through the relay: {d:?}"
    );
    assert_eq!(u.unroutable, 0);
    assert!(d2.sent > 20 && u2.sent > 0, "{u2:?} {d2:?}");
    stop.store(true, Ordering::Relaxed);
}
