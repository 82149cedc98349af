//! A real RTMP server for tests: Debian nginx with libnginx-mod-rtmp, run in the foreground
//! as a child on a free loopback port with a temporary config, killed on drop.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx RTMP module installed by Debian's libnginx-mod-rtmp.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Why the real-server tests cannot run here (`None`: they can).
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    for (cmd, arg) in [
        ("nginx", "-v"),
        ("ffmpeg", "-version"),
        ("ffprobe", "-version"),
    ] {
        let ok = Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(cmd.to_owned());
        }
    }
    if !Path::new(RTMP_MODULE).exists() {
        missing.push("libnginx-mod-rtmp".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// nginx-rtmp on `127.0.0.1:port`, application `live`.
pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    /// Its port.
    pub port: u16,
}

impl Nginx {
    /// Starts it and waits until it listens.
    pub fn start(dir: &Path, port: u16) -> Nginx {
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; user root;\n\
             pid nginx.pid; error_log stderr info;\n\
             load_module {RTMP_MODULE};\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; }} }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("nginx.log"))
            .expect("nginx.log");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn nginx");
        let n = Nginx {
            child: Some(child),
            dir: dir.to_owned(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx not listening; log:\n{}",
                n.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        n
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx.log")).unwrap_or_default()
    }

    /// SIGKILL (the whole process group).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The H.264 SEI user-data payloads (hex after the 16-byte UUID, as ffmpeg's `showinfo`
/// prints them) found in the first `frames` video frames of `input`, with their UUIDs.
pub fn read_sei(input: &str, frames: u32, timeout_s: u32) -> Vec<(String, Vec<u8>)> {
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .args([
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-analyzeduration",
            "3000000",
            "-i",
            input,
        ])
        .args([
            "-map",
            "0:v:0",
            "-frames:v",
            &frames.to_string(),
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    parse_showinfo_sei(&text)
}

/// Parses `showinfo`'s `UUID=` / `User Data=` lines into (uuid, payload) pairs.
pub fn parse_showinfo_sei(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut uuid: Option<String> = None;
    for line in text.lines() {
        if let Some(i) = line.find("UUID=") {
            uuid = Some(line[i + 5..].trim().to_owned());
        } else if let Some(i) = line.find("User Data=") {
            let hex: String = line[i + 10..]
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            let bytes = (0..hex.len() / 2)
                .filter_map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).ok())
                .collect();
            out.push((uuid.take().unwrap_or_default(), bytes));
        }
    }
    out
}
