#![allow(clippy::unwrap_used)]

use super::*;
use mixer::h264::CUE_SEI_UUID;
use mixer::mux::ts::id3_priv_tag;

#[test]
fn a_stream_goes_on_where_another_node_left_it() {
    let cfg = HlsConfig {
        target_duration: Duration::from_millis(500),
        ..HlsConfig::default()
    };
    let mut a = HlsSegmenter::new(cfg.clone());
    let kf = [0, 0, 0, 1, 0x65, 0x88];
    for i in 0..8u64 {
        a.push_video(i * 45_000, true, &kf);
    }
    let (next, disc) = a.store().position().expect("segments");
    assert!(next >= 5, "{next}");
    let mut b = HlsSegmenter::new(cfg);
    b.continue_from(next, disc);
    for i in 0..4u64 {
        b.push_video(i * 45_000, true, &kf);
    }
    let p = b.store().playlist().expect("playlist");
    assert!(
        p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{next}\n")),
        "{p}"
    );
    let first_seg = p.find(".ts").unwrap();
    assert!(p[..first_seg].contains("#EXT-X-DISCONTINUITY\n"), "{p}");
    assert_eq!(
        b.store().position().map(|(n, d)| (n > next, d)),
        Some((true, disc + 1))
    );
}

const IDR: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 0x88,
];
const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9A];

/// Feeds `secs` seconds of 30 fps video with a keyframe every `gop` frames and
/// 48 kHz audio, returning the closed segments.
fn feed(seg: &mut HlsSegmenter, frames: u64, gop: u64) -> Vec<HlsSegment> {
    let mut out = Vec::new();
    let mut audio_pts = 0u64;
    for i in 0..frames {
        let pts = i * 3000;
        while audio_pts <= pts {
            seg.push_audio(audio_pts, &[0x21, 0x00]);
            audio_pts += 1920;
        }
        let key = i % gop == 0;
        out.extend(seg.push_video(pts, key, if key { IDR } else { P }));
    }
    out
}

#[test]
fn cuts_at_first_keyframe_after_target() {
    // Keyframe every 0.5 s, target 1 s → 1.0 s segments.
    let mut s = HlsSegmenter::new(HlsConfig::default());
    let segs = feed(&mut s, 30 * 5, 15);
    assert_eq!(segs.len(), 4);
    for (i, g) in segs.iter().enumerate() {
        assert_eq!(g.sequence, i as u64);
        assert_eq!(g.duration_ticks, 90_000);
        assert_eq!(g.data.len() % 188, 0);
        assert_eq!(g.data[0], 0x47);
    }
    // Keyframe every 0.7 s (21 frames): cuts at 1.4 s.
    let mut s = HlsSegmenter::new(HlsConfig::default());
    let segs = feed(&mut s, 30 * 5, 21);
    assert!(segs.len() >= 2);
    for g in &segs {
        assert_eq!(g.duration_ticks, 42 * 3000);
    }
    // Keyframe every 2 s: 2 s segments.
    let mut s = HlsSegmenter::new(HlsConfig::default());
    let segs = feed(&mut s, 30 * 7, 60);
    assert_eq!(segs.len(), 3);
    assert!(segs.iter().all(|g| g.duration_ticks == 180_000));
    let last = s.finish().unwrap();
    assert_eq!(last.duration_ticks, 30 * 3000);
}

#[test]
fn drops_media_before_first_keyframe() {
    let mut s = HlsSegmenter::new(HlsConfig::default());
    s.push_audio(0, &[1, 2]);
    assert!(s.push_video(0, false, P).is_none());
    assert!(s.finish().is_none());
    assert!(s.store().playlist().is_none());
}

#[test]
fn inserts_parameter_sets_before_bare_keyframes() {
    let mut s = HlsSegmenter::new(HlsConfig::default());
    s.push_video(0, true, IDR);
    s.push_video(90_000, true, &[0, 0, 0, 1, 0x65, 0x77]);
    let seg = s.finish().unwrap();
    // The second segment's video PES carries the SPS NAL learnt from the first.
    let needle = [0, 0, 0, 1, 0x67, 0x42];
    assert!(seg.data.windows(needle.len()).any(|w| w == needle));
    // After an access unit delimiter, not before it.
    s.push_video(
        180_000,
        true,
        &[0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x65, 0x66],
    );
    let seg = s.finish().unwrap();
    let needle = [0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x42];
    assert!(seg.data.windows(needle.len()).any(|w| w == needle));
    let double_aud = [0x09, 0xF0, 0, 0, 0, 1, 0x09];
    assert!(!seg.data.windows(double_aud.len()).any(|w| w == double_aud));
}

#[test]
fn sliding_window_playlist() {
    let cfg = HlsConfig {
        window: 3,
        keep_extra: 1,
        part_target: None,
        ..HlsConfig::default()
    };
    let mut s = HlsSegmenter::new(cfg);
    let store = s.store();
    feed(&mut s, 30 * 8, 30); // 7 closed segments of 1 s
    let pl = store.playlist().unwrap();
    let want = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:4\n\
                #EXTINF:1.000,\nseg4.ts\n#EXTINF:1.000,\nseg5.ts\n#EXTINF:1.000,\nseg6.ts\n";
    assert_eq!(pl, want);
    assert_eq!(store.sequences(), vec![3, 4, 5, 6]);
    assert!(store.segment(3).is_some());
    assert!(store.segment(2).is_none());
    s.finish();
    let pl = store.playlist().unwrap();
    assert!(pl.ends_with("seg7.ts\n#EXT-X-ENDLIST\n"));
    assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:5\n"));
}

#[test]
fn timestamp_jumps_are_discontinuities() {
    let cfg = HlsConfig {
        window: 2,
        keep_extra: 0,
        part_target: None,
        ..HlsConfig::default()
    };
    let mut s = HlsSegmenter::new(cfg);
    let store = s.store();
    s.push_video(900_000, true, IDR);
    s.push_video(903_000, false, P);
    // The program restarted at 0: cut here even though the segment is short.
    let closed = s.push_video(0, true, IDR).unwrap();
    assert_eq!(closed.duration_ticks, 6000);
    assert!(!closed.discontinuity);
    s.push_video(90_000, true, IDR);
    let pl = store.playlist().unwrap();
    assert_eq!(
        pl,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:0.067,\nseg0.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg1.ts\n"
    );
    // A forward jump over 10 s too; once seg1 leaves the window the discontinuity
    // sequence counts it.
    s.push_video(90_000 + 20 * 90_000, true, IDR);
    s.push_video(90_000 + 21 * 90_000, true, IDR);
    let pl = store.playlist().unwrap();
    assert!(
        pl.contains(
            "#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n\
             #EXTINF:0.033,\nseg2.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg3.ts\n"
        ),
        "{pl}"
    );
}

#[test]
fn restart_after_finish_is_a_discontinuity() {
    let mut s = HlsSegmenter::new(HlsConfig {
        part_target: None,
        ..HlsConfig::default()
    });
    s.push_video(450_000, true, IDR);
    s.push_video(540_000, true, IDR);
    s.finish();
    // The program starts again from 0.
    s.push_video(0, true, IDR);
    let seg = s.push_video(90_000, true, IDR).unwrap();
    assert!(seg.discontinuity);
    let pl = s.store().playlist().unwrap();
    assert!(
        pl.contains("#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg2.ts\n"),
        "{pl}"
    );
    assert!(!pl.contains("ENDLIST"));
}

#[test]
fn playlist_text_and_names() {
    assert_eq!(render_playlist(&[], false), None);
    let pl = render_playlist(&[(10, 135_000), (11, 90_000)], true).unwrap();
    assert_eq!(
        pl,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
         #EXTINF:1.500,\nseg10.ts\n#EXTINF:1.000,\nseg11.ts\n#EXT-X-ENDLIST\n"
    );
    assert_eq!(parse_segment_file_name("seg42.ts"), Some(42));
    assert_eq!(parse_segment_file_name("seg.ts"), None);
    assert_eq!(parse_segment_file_name("seg-1.ts"), None);
    assert_eq!(parse_segment_file_name("../seg1.ts"), None);
    assert_eq!(segment_file_name(7), "seg7.ts");
}

/// Durations (s) of the parts listed for segment `n` in a playlist.
fn listed_parts(pl: &str, n: u64) -> Vec<f64> {
    let prefix = format!("URI=\"seg{n}.");
    pl.lines()
        .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(&prefix))
        .map(|l| {
            let d = l.split("DURATION=").nth(1).unwrap();
            d.split(',').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn low_latency_parts_playlist_and_hints() {
    // 30 fps, keyframe every 2 s (the program's default GOP): 2 s segments of six
    // 0.333 s parts, the first independent.
    let mut s = HlsSegmenter::new(HlsConfig::default());
    let store = s.store();
    let wall0 = 1_764_800_000_000u64;
    let mut closed = Vec::new();
    let mut audio_pts = 0;
    for i in 0..(30 * 6 + 12) {
        let pts = i * 3000;
        while audio_pts <= pts {
            s.push_audio(audio_pts, &[0x21, 0x00]);
            audio_pts += 1920;
        }
        let key = i % 60 == 0;
        closed.extend(s.push_video_at(pts, key, if key { IDR } else { P }, Some(wall0 + pts / 90)));
    }
    assert_eq!(closed.len(), 3);
    for seg in &closed {
        assert_eq!(seg.parts.len(), 6, "{:?}", seg.parts.len());
        let target = 0.334 * TICKS_PER_SECOND as f64;
        for (i, p) in seg.parts.iter().enumerate() {
            assert!(p.duration_ticks as f64 <= target, "{}", p.duration_ticks);
            assert!(p.duration_ticks as f64 >= 0.85 * target);
            assert_eq!(p.independent, i == 0);
            // Every part starts with its own PAT.
            assert_eq!(&p.data[..4], &[0x47, 0x40, 0x00, p.data[3]]);
        }
        let joined: Vec<u8> = seg.parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, seg.data.to_vec());
        assert_eq!(
            seg.parts.iter().map(|p| p.duration_ticks).sum::<u64>(),
            seg.duration_ticks
        );
    }
    let pl = store.playlist().unwrap();
    for tag in [
        "#EXT-X-VERSION:6\n",
        "#EXT-X-TARGETDURATION:2\n",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,HOLD-BACK=6\n",
        "#EXT-X-PART-INF:PART-TARGET=0.33400\n",
        "#EXT-X-PROGRAM-DATE-TIME:2025-12-03T22:13:20.000Z\n",
        "#EXT-X-PROGRAM-DATE-TIME:2025-12-03T22:13:24.000Z\n",
        "#EXT-X-PART:DURATION=0.33333,URI=\"seg2.0.ts\",INDEPENDENT=YES\n",
        "#EXTINF:2.000,\nseg2.ts\n",
    ] {
        assert!(pl.contains(tag), "{tag} missing in\n{pl}");
    }
    // Parts of the last two finished segments and of the open one (12 frames: one
    // part out, the second being written and hinted); the oldest's no longer.
    assert!(listed_parts(&pl, 0).is_empty(), "{pl}");
    assert_eq!(listed_parts(&pl, 1).len(), 6);
    assert_eq!(listed_parts(&pl, 2).len(), 6);
    assert_eq!(listed_parts(&pl, 3).len(), 1);
    assert!(
        pl.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg3.1.ts\"\n"),
        "{pl}"
    );
    assert!(store.part_is_next(3, 1));
    assert!(store.part(3, 0).is_some() && store.part(3, 1).is_none());
    assert_eq!(store.part(1, 5), Some(closed[1].parts[5].data.clone()));
    // Blocking reload: what is out is ready, the next part waits, three ahead is refused.
    assert_eq!(store.readiness(3, Some(0)), Readiness::Ready);
    assert_eq!(store.readiness(2, Some(9)), Readiness::Ready);
    assert_eq!(store.readiness(3, Some(1)), Readiness::Wait);
    assert_eq!(store.readiness(2, None), Readiness::Ready);
    assert_eq!(store.readiness(3, None), Readiness::Wait);
    assert_eq!(store.readiness(4, Some(0)), Readiness::Wait);
    assert_eq!(store.readiness(5, None), Readiness::TooFar);
    assert_eq!(store.blocking_timeout(), Duration::from_secs(6));
    // Once ended: no hint, no parts, every request answered.
    s.finish();
    let pl = store.playlist().unwrap();
    assert!(
        !pl.contains("PRELOAD-HINT") && !pl.contains("#EXT-X-PART:"),
        "{pl}"
    );
    assert!(pl.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(store.readiness(4, Some(3)), Readiness::Ready);
}

#[test]
fn a_cue_becomes_one_timed_id3_tag() {
    use mixer::h264::{build_user_data_sei, insert_sei_before_slices};
    let mut s = HlsSegmenter::new(HlsConfig::default());
    let json = br#"{"v":1,"id":"red-1","pts_ms":33,"data":{"kind":"red_packet"}}"#;
    let sei = build_user_data_sei(&CUE_SEI_UUID, json);
    // The mixer repeats a cue over three pictures.
    s.push_video(0, true, IDR);
    for i in 1..4 {
        let au = insert_sei_before_slices(P, std::slice::from_ref(&sei)).unwrap();
        s.push_video(i * 3000, false, &au);
    }
    let seg = s.finish().unwrap();
    let tag = id3_priv_tag(CUE_ID3_OWNER, json);
    let found = seg.data.windows(10).filter(|w| *w == &tag[..10]).count();
    assert_eq!(found, 1, "one ID3 tag for the cue");
    assert!(seg
        .data
        .windows(b"cohost/cue".len())
        .any(|w| w == b"cohost/cue"));
    // The PMT declares the metadata stream (type 0x15 on PID 0x102, 'ID3 ').
    assert!(seg.data.windows(3).any(|w| w == [0x15, 0xE1, 0x02]));
}

#[test]
fn program_date_times_and_part_names() {
    assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso8601_ms(1_796_342_399_999), "2026-12-03T23:59:59.999Z");
    assert_eq!(part_file_name(12, 3), "seg12.3.ts");
    assert_eq!(parse_part_file_name("seg12.3.ts"), Some((12, 3)));
    assert_eq!(parse_part_file_name("seg12.ts"), None);
    assert_eq!(parse_part_file_name("seg1.2.3.ts"), None);
    assert_eq!(parse_part_file_name("seg.1.ts"), None);
    assert_eq!(parse_segment_file_name("seg12.3.ts"), None);
}

#[test]
fn the_target_duration_is_the_longest_segment_rounded() {
    assert_eq!(target_duration_secs(0), 1);
    assert_eq!(target_duration_secs(180_000), 2);
    // A keyframe a frame late: still 2 (RFC 8216 rounds each EXTINF to the nearest integer).
    assert_eq!(target_duration_secs(183_000), 2);
    assert_eq!(target_duration_secs(134_999), 1);
    assert_eq!(target_duration_secs(135_000), 2);
    assert_eq!(target_duration_secs(225_000), 3);
}
