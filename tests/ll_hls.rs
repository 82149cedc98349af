//! Low-Latency HLS from a running server, as a player uses it: a WHIP co-host publishes; the
//! playlist carries the LL-HLS tags and a date on each segment; a blocking reload for the
//! hinted part answers once that part is out and lists it; the hinted part itself, asked for
//! before it exists, comes when it is out; malformed or far-ahead requests are clear 400s; a
//! cue posted through the API is found by ffprobe as timed ID3 (`PRIV` owner `cohost/cue`,
//! the cue SEI's JSON) at the time of the frame the API answered with, in the parts fetched
//! one by one the way hls.js does; the parts from an independent one decode with ffmpeg.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The playlist's preload hint: (segment, part).
fn hint(pl: &str) -> (u64, u64) {
    let uri = pl
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("no preload hint in\n{pl}"));
    let name = uri.trim_end_matches('"').trim_end_matches(".ts");
    let (n, p) = name.trim_start_matches("seg").split_once('.').unwrap();
    (n.parse().unwrap(), p.parse().unwrap())
}

/// Parts listed: (URI, independent).
fn parts(pl: &str) -> Vec<(String, bool)> {
    pl.lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .map(|l| {
            let uri = l.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
            (uri.to_owned(), l.contains("INDEPENDENT=YES"))
        })
        .collect()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// `2026-12-04T01:20:00.123Z` as Unix ms (for dates in this century).
fn parse_date(s: &str) -> f64 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (H. Hinnant).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + ms.parse::<i64>().unwrap()) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_parts_blocking_reload_and_cues_as_timed_id3() {
    if !have("ffprobe") || !have("ffmpeg") {
        eprintln!("SKIPPED ll_hls: ffmpeg/ffprobe not installed (scripts/test.sh installs them)");
        return;
    }
    let s = start_server().await;
    let room = "ll-show";
    let (_peer, _res, _stop) = whip_publish(&s, room, "alice", "host", 320, 240).await;
    let http = reqwest::Client::new();
    let base = s.url(&format!("/live/{room}/"));
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.unwrap() }
    };

    // The playlist appears once two segments are out (a keyframe every 2 s).
    let mut pl = String::new();
    for _ in 0..150 {
        let r = get("index.m3u8".into()).await;
        if r.status() == 200 {
            pl = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pl.is_empty(), "no playlist within 15 s");
    for tag in [
        "#EXT-X-VERSION:6\n",
        "#EXT-X-PART-INF:PART-TARGET=0.33400\n",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002",
    ] {
        assert!(pl.contains(tag), "{tag} missing in\n{pl}");
    }
    let dates: Vec<f64> = pl
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .map(parse_date)
        .collect();
    let segments = pl.lines().filter(|l| l.starts_with("#EXTINF:")).count();
    assert_eq!(dates.len(), segments, "a date on every segment:\n{pl}");
    let newest = dates.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        (now_ms() - newest).abs() < 10_000.0,
        "the newest segment's date is the wall clock: {newest}"
    );
    assert!(parts(&pl).iter().all(|(u, _)| u.ends_with(".ts")));

    // Blocking reload for the hinted part: the answer lists it.
    let (n, p) = hint(&pl);
    let r = get(format!("index.m3u8?_HLS_msn={n}&_HLS_part={p}")).await;
    assert_eq!(r.status(), 200);
    let pl2 = r.text().await.unwrap();
    let name = format!("seg{n}.{p}.ts");
    assert!(
        parts(&pl2).iter().any(|(u, _)| *u == name),
        "{name} not in\n{pl2}"
    );
    // The next hinted part, asked for before it is out, comes when it is.
    let (n2, p2) = hint(&pl2);
    let r = get(format!("seg{n2}.{p2}.ts")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp2t");
    let b = r.bytes().await.unwrap();
    assert!(!b.is_empty() && b.len() % 188 == 0 && b[0] == 0x47);
    // Clear errors.
    for (q, code) in [
        (format!("_HLS_msn={}", n + 10), 400),
        ("_HLS_part=1".to_owned(), 400),
        ("_HLS_msn=x".to_owned(), 400),
    ] {
        let r = get(format!("index.m3u8?{q}")).await;
        assert_eq!(r.status(), code, "{q}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "bad_request", "{e}");
    }
    assert_eq!(get(format!("seg{}.0.ts", n + 10)).await.status(), 404);

    // A cue through the API, then the parts one by one as a player reads them (blocking
    // reloads), from the part being written when the cue was posted.
    let (mut n, mut p) = hint(&get("index.m3u8".into()).await.text().await.unwrap());
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/cues")))
        .bearer_auth(API_KEY)
        .json(&json!({"id": "coupon-7", "data": {"kind": "coupon", "off": 30}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let ack: Value = r.json().await.unwrap();
    let cue_pts_ms = ack["pts_ms"].as_u64().unwrap();
    let mut fetched = Vec::new();
    let mut independent_seen = false;
    // Every part fetched (for the metadata), and those from the first independent one (to
    // decode).
    let (mut all, mut stream) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let r = get(format!("index.m3u8?_HLS_msn={n}&_HLS_part={p}")).await;
        assert_eq!(r.status(), 200);
        let pl = r.text().await.unwrap();
        let listed = parts(&pl);
        let name = format!("seg{n}.{p}.ts");
        let part = match listed.iter().find(|(u, _)| *u == name) {
            Some(x) => x.clone(),
            None => {
                // The segment ended before this part: the next one starts the next segment.
                n += 1;
                p = 0;
                continue;
            }
        };
        let bytes = get(name.clone()).await.bytes().await.unwrap();
        fetched.push(name);
        independent_seen |= part.1;
        if independent_seen {
            stream.extend_from_slice(&bytes);
        }
        all.extend_from_slice(&bytes);
        p += 1;
        if fetched.len() >= 12 && independent_seen {
            break;
        }
    }
    assert!(independent_seen, "no independent part in {fetched:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parts.ts");
    std::fs::write(&path, &stream).unwrap();

    // The parts decode (from an independent one, as a joining player starts).
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ffprobe reads the cue as timed ID3 at its frame's time.
    let path = dir.path().join("all.ts");
    std::fs::write(&path, &all).unwrap();
    let found: Vec<(i64, String)> = common::timed_id3_packets(&path)
        .into_iter()
        .map(|(pts, bytes)| (pts, String::from_utf8_lossy(&bytes).into_owned()))
        .collect();
    let (pts, text) = found
        .iter()
        .find(|(_, t)| t.contains("coupon-7"))
        .unwrap_or_else(|| panic!("cue not in the timed metadata: {found:?} (parts {fetched:?})"));
    assert!(text.contains("cohost/cue\0{"), "{text}");
    let json_start = text.find('{').unwrap();
    let cue: Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert_eq!(cue["id"], "coupon-7");
    assert_eq!(cue["data"]["off"], 30);
    assert_eq!(cue["pts_ms"].as_u64(), Some(cue_pts_ms));
    // 90 kHz, after the segments' 0.7 s offset: the frame the API named.
    assert_eq!(*pts, 63_000 + cue_pts_ms as i64 * 90, "{found:?}");
    assert_eq!(
        found.iter().filter(|(_, t)| t.contains("coupon-7")).count(),
        1,
        "one tag for a cue repeated over three frames"
    );
}
