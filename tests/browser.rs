//! Browser tests of the demo pages (`web-demo/`), each a scenario under `tests/browser/`
//! (playwright-core, shared harness `tests/browser/harness.mjs`) against the real server
//! binary:
//! - `cohost_pages.mjs`: the host page and a guest page as real WebRTC peers; each decodes
//!   the other's video; accept, invite, mute and remove through the page UI.
//! - `audience.mjs`: the host page publishes, which starts the room's program; the audience
//!   page plays its HLS with hls.js and draws the layout and cue SEI.
//! - `flv_player.mjs`: the host page publishes; mpegts.js (npm) on a page of another origin
//!   plays `/live/{room}.flv` (`currentTime` and decoded pictures advance) and the time from
//!   opening the page to its first picture is printed.
//!
//! - `studio_pages.mjs`: the host page starts and stops a recording, which plays in a
//!   `<video>` while written and after (seek included); the room list shows snapshots.
//! - `cluster_rejoin.mjs`: cluster mode — the host page on node A joins a room on node B
//!   (relayed), B is killed, the page is told `room_moved`, rejoins and publishes again on A.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node` and `npm`, and `unshare --net` (root):
//! each run (server, browser) happens in a fresh network namespace with only `lo`, so WebRTC
//! stays on loopback (see the testing notes). Installs playwright-core, whip-whep and
//! mpegts.js (`tests/browser`) and hls.js (`web-demo`) with `npm ci` when missing. Skipped,
//! with a message, when Chromium or node is missing. Run:
//! `cargo test --test browser -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The scenarios each run a browser and a server: one at a time on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `npm ci` (or `npm install` without a lock file) in `dir` unless `marker` exists there.
fn npm_install(dir: &Path, marker: &str) {
    if dir.join(marker).exists() {
        return;
    }
    let sub = if dir.join("package-lock.json").exists() {
        "ci"
    } else {
        "install"
    };
    eprintln!("browser: npm {sub} in {}", dir.display());
    let st = Command::new("npm")
        .args([sub, "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("run npm (is npm installed?)");
    assert!(st.success(), "npm {sub} failed in {}", dir.display());
}

/// Runs `tests/browser/<script>` in a fresh network namespace; panics if it fails.
fn run_scenario(script: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        eprintln!("SKIPPED {script}: {chromium} not found (apt-get install -y chromium)");
        return;
    }
    if !have("node", "--version") {
        eprintln!("SKIPPED {script}: `node` not found (install Node.js 18+ and npm)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    npm_install(&dir, "node_modules/mpegts.js/dist/mpegts.js");
    npm_install(
        &root.join("web-demo"),
        "node_modules/hls.js/dist/hls.min.js",
    );
    let status = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$@""#,
            "sh",
            "node",
            script,
        ])
        .current_dir(&dir)
        .env("CARGO_BIN_EXE_cohost", env!("CARGO_BIN_EXE_cohost"))
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run `unshare --net` (needs root or user namespaces)");
    assert!(
        status.success(),
        "{script} failed ({status}); diagnostics are printed above (run with --nocapture)"
    );
}

#[test]
fn host_and_guest_pages_cohost_over_webrtc() {
    run_scenario("cohost_pages.mjs");
}

#[test]
fn the_host_page_rejoins_when_its_rooms_node_dies() {
    run_scenario("cluster_rejoin.mjs");
}

#[test]
fn audience_page_plays_hls_with_layout_and_cue_overlays() {
    run_scenario("audience.mjs");
}

#[test]
fn mpegts_js_plays_the_program_over_http_flv() {
    run_scenario("flv_player.mjs");
}

#[test]
fn third_party_whip_whep_clients_from_the_apps_origin_and_through_its_proxy() {
    run_scenario("field_clients.mjs");
}

#[test]
fn relay_only_pages_publish_and_play_through_coturn() {
    run_scenario("turn_relay.mjs");
}

#[test]
fn the_host_page_records_and_plays_its_recording_and_the_room_list_shows_snapshots() {
    run_scenario("studio_pages.mjs");
}

#[test]
fn a_chromium_cohost_behind_a_capped_uplink_lowers_its_bitrate_and_stays_fluid() {
    run_scenario("weak_uplink.mjs");
}
