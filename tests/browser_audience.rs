//! Browser test of the audience page (`web-demo/audience.html`): headless Chromium runs the
//! host page (fake camera: it publishes, which starts the room's program) and the audience
//! page, which plays the program's HLS with hls.js and draws the layout and cue SEI, driven by
//! `tests/browser/audience.mjs` (playwright-core).
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node` and `npm`, and `unshare --net` (root):
//! the whole run (server, browser) happens in a fresh network namespace with only `lo`, so
//! WebRTC stays on loopback (see the testing notes). Installs playwright-core
//! (`tests/browser`) and hls.js (`web-demo`, served by the server at `/vendor/hls.min.js`) with
//! `npm ci` when missing. Skipped, with a message, when Chromium or node is missing.
//!
//! Run: `cargo test --test browser_audience -- --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    eprintln!("browser_audience: npm {sub} in {}", dir.display());
    let st = Command::new("npm")
        .args([sub, "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("run npm (is npm installed?)");
    assert!(st.success(), "npm {sub} failed in {}", dir.display());
}

#[test]
fn audience_page_plays_hls_with_layout_and_cue_overlays() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        eprintln!("SKIPPED browser_audience: {chromium} not found (apt-get install -y chromium)");
        return;
    }
    if !have("node", "--version") {
        eprintln!("SKIPPED browser_audience: `node` not found (install Node.js 18+ and npm)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    npm_install(&dir, "node_modules/playwright-core");
    npm_install(
        &root.join("web-demo"),
        "node_modules/hls.js/dist/hls.min.js",
    );
    let bin = env!("CARGO_BIN_EXE_cohost");
    let out = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$@""#,
            "sh",
            "node",
            "audience.mjs",
        ])
        .current_dir(&dir)
        .env("CARGO_BIN_EXE_cohost", bin)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run `unshare --net` (needs root or user namespaces)");
    assert!(
        out.success(),
        "browser test failed ({out}); diagnostics are printed above (run with --nocapture)"
    );
}
