//! Server configuration: CLI flags, each also `COHOST_<NAME>` in the environment and a key of an
//! optional TOML file (`--config`). Precedence: flag > environment > file > default.
//!
//! One struct, [`ServeArgs`], is the flag, the variable and the file key at once (clap and
//! serde derive from it; the layers are merged generically), and [`Config::from_args`] hands
//! each setting to the part that owns it (`signaling::http::Config`, `ProgramConfig`,
//! `HttpLimits`, [`RtcConfig`]), whose `Default` holds the default. A new setting is a field
//! here and the line that hands it over.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors building the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML file is invalid.
    #[error("invalid config file: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is invalid.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// Which setting.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// Flags of `cohost` (the server). Every flag is also an environment variable and a key of
/// the TOML file.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// Optional TOML file with the same keys as the flags (`bind = "0.0.0.0:8080"`, ...).
    #[arg(long, env = "COHOST_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// HTTP address: API, WebSocket signaling, WHIP/WHEP, demo pages, HLS. [default: 127.0.0.1:8080]
    #[arg(long, env = "COHOST_BIND")]
    pub bind: Option<SocketAddr>,
    /// API key for admin calls (`Authorization: Bearer <key>`). Without key and secret the
    /// server runs in development mode with a random key it logs.
    #[arg(long, env = "COHOST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Secret that signs participant tokens (HS256).
    #[arg(long, env = "COHOST_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Address announced in ICE candidates (the host's public IP behind 1:1 NAT).
    #[arg(long, env = "COHOST_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Local IP the media UDP sockets bind to. [default: 0.0.0.0, every interface]
    #[arg(long, env = "COHOST_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,
    /// UDP port range for media, `first-last`. One port per peer connection (webrtc-rs 0.21
    /// has no single-port mux). [default: 50000-59999]
    #[arg(long, env = "COHOST_UDP_PORTS")]
    pub udp_ports: Option<String>,
    /// Tracing filter (`info`, `cohost=debug,webrtc=warn`, ...). [default: info,webrtc=warn,rtc=warn]
    #[arg(long, env = "COHOST_LOG")]
    pub log: Option<String>,
    /// Worker threads shared by all rooms' mixers (compose + encode), earliest deadline
    /// first. [default: the number of CPUs]
    #[arg(long, env = "COHOST_MIXER_THREADS")]
    pub mixer_threads: Option<usize>,
    /// Most programs (mixed rooms) run at once; past it a room's program waits for a free
    /// slot (its co-hosts still see and hear each other). 0 = no limit. [default: 0]
    #[arg(long, env = "COHOST_MAX_PROGRAMS")]
    pub max_programs: Option<usize>,
    /// Most WHEP viewers of one room's program; past it `POST /whep/{room}` answers 503
    /// (the audience watches HLS or the CDN). 0 = no limit. [default: 50]
    #[arg(long, env = "COHOST_MAX_WHEP_VIEWERS")]
    pub max_whep_viewers: Option<usize>,
    /// Most open HTTP connections (WebSockets included); past it new ones get `503` and are
    /// closed. Also capped to half the process's descriptor limit, which is raised to its
    /// hard maximum at start. [default: 10000]
    #[arg(long, env = "COHOST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open HTTP connections from one IP address. [default: 256]
    #[arg(long, env = "COHOST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Most viewers of one room on signaling; hosts (4) and guests (32) have their own seats,
    /// so viewers never keep the host out. Also the most HTTP-FLV viewers of one room's
    /// program (`429` past it). [default: 256]
    #[arg(long, env = "COHOST_MAX_ROOM_VIEWERS")]
    pub max_room_viewers: Option<usize>,
    /// Directory of the program recordings (`POST /api/rooms/{room}/recordings`, `mix.record`);
    /// a room's files are `{dir}/{room}/{id}.mp4`. [default: ./recordings]
    #[arg(long, env = "COHOST_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Fonts of the program's tile labels (`mix.labels`), comma-separated paths in fallback
    /// order (a character is drawn with the first font that has it). [default: DejaVu Sans
    /// Bold, then WenQuanYi Micro Hei for CJK — Debian's fonts-dejavu-core, fonts-wqy-microhei]
    #[arg(long, env = "COHOST_LABEL_FONTS")]
    pub label_fonts: Option<String>,
    /// A second address serving `/metrics` (and `/healthz`) without auth, for the internal
    /// network; on `--bind`, `/metrics` then needs the API key (it always does outside
    /// development mode).
    #[arg(long, env = "COHOST_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Allow development mode (no API key: anyone may mint tokens) on a non-loopback
    /// `--bind`. Without it such a start is refused.
    #[arg(long, env = "COHOST_DEV_PUBLIC")]
    pub dev_public: bool,
    /// Origins whose pages may call WHIP, WHEP, `/api` and `/live` (comma-separated
    /// `scheme://host[:port]`, or `*`). [default: `*` in development mode, none in production]
    #[arg(long, env = "COHOST_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// STUN/TURN servers announced to clients (comma-separated `stun:`/`turn:` URLs): WHIP/WHEP
    /// `Link` headers (OPTIONS and 201) and the signaling `joined` message.
    #[arg(long, env = "COHOST_ICE_SERVERS")]
    pub ice_servers: Option<String>,
    /// The TURN server's shared secret (coturn `use-auth-secret`/`static-auth-secret`):
    /// time-limited TURN credentials are minted per participant with it.
    #[arg(long, env = "COHOST_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Cluster mode: the fleet's Redis (`redis://host:port/db`). Every node then needs the
    /// same --api-key/--api-secret, its own --node-id and --advertise-url. Without it cohost
    /// is one self-contained node.
    #[arg(long, env = "COHOST_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (`[A-Za-z0-9_.-]`, 1-64). [default: the host name and a
    /// random suffix]
    #[arg(long, env = "COHOST_NODE_ID")]
    pub node_id: Option<String>,
    /// The base URL other nodes reach this one on (`http://10.0.0.5:8080`). [default:
    /// `http://` and --bind, when that is not a wildcard address]
    #[arg(long, env = "COHOST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Cluster mode: on SIGTERM the node drains (no new rooms, `/healthz` 503) for at most
    /// this many seconds, then moves what is left and exits. [default: 1800]
    #[arg(long, env = "COHOST_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
}

impl ServeArgs {
    /// These settings over `below`'s: every one given here (a value, or a flag set) wins.
    fn over(&self, below: ServeArgs) -> Result<ServeArgs, ConfigError> {
        let invalid = |e: serde_json::Error| ConfigError::Invalid {
            key: "config",
            message: e.to_string(),
        };
        let mut merged = serde_json::to_value(below).map_err(invalid)?;
        let mine = serde_json::to_value(self).map_err(invalid)?;
        if let (Some(m), serde_json::Value::Object(mine)) = (merged.as_object_mut(), mine) {
            for (k, v) in mine {
                // Not given: `None`, or a switch left off.
                if !v.is_null() && v != serde_json::Value::Bool(false) {
                    m.insert(k, v);
                }
            }
        }
        let mut out: ServeArgs = serde_json::from_value(merged).map_err(invalid)?;
        out.config.clone_from(&self.config);
        Ok(out)
    }
}

/// Media (WebRTC) settings.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Bind IP for UDP.
    pub media_ip: IpAddr,
    /// Announced IP.
    pub public_ip: Option<IpAddr>,
    /// First UDP port.
    pub port_min: u16,
    /// Last UDP port.
    pub port_max: u16,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            media_ip: IpAddr::from([0, 0, 0, 0]),
            public_ip: None,
            port_min: 50000,
            port_max: 59999,
        }
    }
}

/// The whole server configuration, composed of each part's own config.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP bind address.
    pub bind: SocketAddr,
    /// API key.
    pub api_key: String,
    /// Token secret.
    pub api_secret: String,
    /// `true` when key and secret were generated (development mode).
    pub dev_mode: bool,
    /// Tracing filter.
    pub log: String,
    /// WebRTC.
    pub rtc: RtcConfig,
    /// Signaling.
    pub signaling: signaling::http::Config,
    /// Live programs (mix defaults, grace period, cue limits).
    pub program: crate::program::ProgramConfig,
    /// HTTP connection limits and timeouts.
    pub http: crate::conn::HttpLimits,
    /// Where `/metrics` is served without auth, if anywhere.
    pub metrics_bind: Option<SocketAddr>,
    /// Origins allowed to call from a browser page (CORS).
    pub cors: crate::cors::CorsOrigins,
    /// Cluster mode (`--redis-url`), if on.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: random_hex(16),
            api_secret: random_hex(32),
            dev_mode: true,
            log: "info,webrtc=warn,rtc=warn".into(),
            rtc: RtcConfig::default(),
            signaling: signaling::http::Config::default(),
            program: crate::program::ProgramConfig::default(),
            http: crate::conn::HttpLimits::default(),
            metrics_bind: None,
            cors: crate::cors::CorsOrigins::Any,
            cluster: None,
        }
    }
}

fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

/// Cluster mode's settings: a shared key and secret (no development mode), a valid node id, a
/// URL the other nodes can reach.
fn cluster_config(
    s: &ServeArgs,
    c: &Config,
    url: &str,
) -> Result<crate::cluster::ClusterConfig, ConfigError> {
    if c.dev_mode {
        return Err(ConfigError::Invalid {
            key: "redis_url",
            message: "cluster mode needs the fleet's --api-key and --api-secret (development \
                      mode is refused)"
                .into(),
        });
    }
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(ConfigError::Invalid {
            key: "redis_url",
            message: format!("expected redis://host:port/db, got `{url}`"),
        });
    }
    let id = s
        .node_id
        .clone()
        .unwrap_or_else(crate::cluster::default_node_id);
    if !signaling::auth::valid_name(&id) {
        return Err(ConfigError::Invalid {
            key: "node_id",
            message: "1-64 of [A-Za-z0-9_.-]".into(),
        });
    }
    let advertise = match s.advertise_url.clone() {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => u,
        Some(u) => {
            return Err(ConfigError::Invalid {
                key: "advertise_url",
                message: format!("expected http://host:port, got `{u}`"),
            })
        }
        None if c.bind.ip().is_unspecified() => {
            return Err(ConfigError::Invalid {
                key: "advertise_url",
                message: format!(
                    "--bind {} is every address: give --advertise-url, the URL other nodes \
                     reach this one on",
                    c.bind
                ),
            })
        }
        None => format!("http://{}", c.bind),
    };
    let mut cfg = crate::cluster::ClusterConfig::new(url, &id, &advertise, &c.api_secret);
    cfg.max_programs = c.program.max_programs;
    if let Some(t) = s.drain_timeout {
        cfg.drain_timeout = std::time::Duration::from_secs(t);
    }
    Ok(cfg)
}

/// Parses `first-last` (or a single port).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = |m: &str| ConfigError::Invalid {
        key: "udp_ports",
        message: format!("{m}: `{s}` (expected e.g. 50000-50100)"),
    };
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad("not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| bad("not a port"))?;
    if a == 0 || b < a {
        return Err(bad("empty range"));
    }
    Ok((a, b))
}

impl Config {
    /// Builds the configuration from flags/environment and the optional file.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                toml::from_str::<ServeArgs>(&text)?
            }
            None => ServeArgs::default(),
        };
        let s = args.over(file)?;
        let mut c = Config::default();
        if let Some(b) = s.bind {
            c.bind = b;
        }
        let key = s.api_key.clone();
        let secret = s.api_secret.clone();
        match (key, secret) {
            (Some(k), Some(s)) => {
                if s.len() < 16 {
                    return Err(ConfigError::Invalid {
                        key: "api_secret",
                        message: "must be at least 16 bytes".into(),
                    });
                }
                c.api_key = k;
                c.api_secret = s;
                c.dev_mode = false;
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "api_key",
                    message: "give both --api-key and --api-secret, or neither (development mode)"
                        .into(),
                })
            }
        }
        if let Some(n) = s.mixer_threads {
            c.program.mixer_threads = n;
        }
        if let Some(n) = s.max_programs {
            c.program.max_programs = n;
        }
        if let Some(n) = s.max_whep_viewers {
            c.program.max_viewers = n;
        }
        if let Some(n) = s.max_connections {
            c.http.max_connections = n.max(1);
        }
        if let Some(n) = s.max_connections_per_ip {
            c.http.max_connections_per_ip = n.max(1);
        }
        if let Some(n) = s.max_room_viewers {
            c.signaling.room_limits.viewers = n;
            c.program.max_flv_viewers = n;
        }
        if let Some(f) = s.label_fonts.as_deref() {
            c.program.label_fonts = f
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(d) = s.recordings_dir.clone() {
            c.program.recordings.dir = d;
        }
        c.metrics_bind = s.metrics_bind;
        c.cors = match s.cors_origins.clone() {
            Some(o) => {
                crate::cors::CorsOrigins::parse(&o).map_err(|message| ConfigError::Invalid {
                    key: "cors_origins",
                    message,
                })?
            }
            None if c.dev_mode => crate::cors::CorsOrigins::Any,
            None => crate::cors::CorsOrigins::None,
        };
        let ice = s.ice_servers.clone().unwrap_or_default();
        let secret = s.turn_secret.clone();
        c.signaling.ice = signaling::ice::IceConfig::parse(&ice, secret).map_err(|message| {
            ConfigError::Invalid {
                key: "ice_servers",
                message,
            }
        })?;
        let dev_public = s.dev_public;
        if c.dev_mode && !c.bind.ip().is_loopback() && !dev_public {
            return Err(ConfigError::Invalid {
                key: "bind",
                message: format!(
                    "development mode (no --api-key/--api-secret: anyone may mint tokens) on \
                     {}, which is not loopback; give an API key and secret, bind 127.0.0.1, or \
                     pass --dev-public if you mean it",
                    c.bind
                ),
            });
        }
        if let Some(l) = s.log.clone() {
            c.log = l;
        }
        c.rtc.public_ip = s.public_ip;
        if let Some(ip) = s.media_ip {
            c.rtc.media_ip = ip;
        }
        if let Some(r) = s.udp_ports.clone() {
            (c.rtc.port_min, c.rtc.port_max) = parse_port_range(&r)?;
        }
        if let Some(url) = s.redis_url.clone() {
            c.cluster = Some(cluster_config(&s, &c, &url)?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let f: ServeArgs = toml::from_str(include_str!("../cohost.example.toml")).unwrap();
        assert_eq!(f.udp_ports.as_deref(), Some("50000-59999"));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000-50010").unwrap(), (50000, 50010));
        assert_eq!(parse_port_range("6000").unwrap(), (6000, 6000));
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("x").is_err());
        assert!(parse_port_range("0-5").is_err());
    }

    #[test]
    fn key_without_secret_is_refused() {
        let a = ServeArgs {
            api_key: Some("k".into()),
            ..Default::default()
        };
        assert!(Config::from_args(&a).is_err());
        let ok = ServeArgs {
            api_key: Some("k".into()),
            api_secret: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        assert!(!Config::from_args(&ok).unwrap().dev_mode);
        assert!(Config::from_args(&ServeArgs::default()).unwrap().dev_mode);
    }

    #[test]
    fn development_mode_on_a_public_address_needs_dev_public() {
        let public = ServeArgs {
            bind: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        };
        let e = Config::from_args(&public).unwrap_err().to_string();
        assert!(e.contains("--dev-public"), "{e}");
        assert!(Config::from_args(&ServeArgs {
            dev_public: true,
            ..public.clone()
        })
        .is_ok());
        assert!(Config::from_args(&ServeArgs {
            api_key: Some("k".into()),
            api_secret: Some("0123456789abcdef".into()),
            ..public
        })
        .is_ok());
        let v6 = ServeArgs {
            bind: Some("[::1]:8080".parse().unwrap()),
            max_room_viewers: Some(9),
            ..Default::default()
        };
        assert_eq!(
            Config::from_args(&v6)
                .unwrap()
                .signaling
                .room_limits
                .viewers,
            9
        );
        assert_eq!(Config::from_args(&v6).unwrap().program.max_flv_viewers, 9);
    }

    #[test]
    fn file_is_read_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("cohost-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "bind = \"127.0.0.1:9000\"\nudp_ports = \"40000-40010\"\nmax_programs = 6\nmax_whep_viewers = 7\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(p.clone()),
            udp_ports: Some("41000-41001".into()),
            ..Default::default()
        };
        let c = Config::from_args(&a).unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!((c.rtc.port_min, c.rtc.port_max), (41000, 41001));
        assert_eq!(c.program.max_programs, 6);
        assert_eq!(c.program.max_viewers, 7);
        assert_eq!(Config::default().program.max_viewers, 50);
        std::fs::write(&p, "nope = 1\n").unwrap();
        assert!(Config::from_args(&a).is_err());
        // Every flag is a file key, switches included; a flag left off does not undo it.
        std::fs::write(
            &p,
            "bind = \"0.0.0.0:9000\"\ndev_public = true\nmax_connections = 12\nlog = \"debug\"\n",
        )
        .unwrap();
        let c = Config::from_args(&ServeArgs {
            config: Some(p.clone()),
            log: Some("warn".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.bind.port(), c.http.max_connections), (9000, 12));
        assert_eq!(c.log, "warn", "the flag wins over the file");
        assert!(c.dev_mode);
    }
}
