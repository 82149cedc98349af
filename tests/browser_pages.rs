//! Browser test of the demo pages (`web-demo/`): headless Chromium runs the host page and a
//! guest page as real WebRTC peers of the real server binary, driven by
//! `tests/browser/cohost_pages.mjs` (playwright-core).
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node` and `npm`, and `unshare --net` (root):
//! the whole run (server, browser) happens in a fresh network namespace with only `lo`, so
//! WebRTC stays on loopback (see the testing notes). Skipped, with a message, when Chromium or
//! node is missing.
//!
//! Run: `cargo test --test browser_pages -- --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn host_and_guest_pages_cohost_over_webrtc() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        eprintln!("SKIPPED browser_pages: {chromium} not found (apt-get install -y chromium)");
        return;
    }
    if !have("node", "--version") {
        eprintln!("SKIPPED browser_pages: `node` not found (install Node.js 18+ and npm)");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let lock = dir.join("package-lock.json").exists();
        let sub = if lock { "ci" } else { "install" };
        eprintln!("browser_pages: npm {sub} in {}", dir.display());
        let st = Command::new("npm")
            .args([sub, "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm (is npm installed?)");
        assert!(st.success(), "npm {sub} failed in {}", dir.display());
    }
    let bin = env!("CARGO_BIN_EXE_cohost");
    let out = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$@""#,
            "sh",
            "node",
            "cohost_pages.mjs",
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
