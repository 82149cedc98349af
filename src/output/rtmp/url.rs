//! RTMP URLs: `rtmp://host[:port]/app[/instance]/stream[?query]`, checked as an operator
//! types them (the outputs API answers `400` with the reason).

use thiserror::Error;

use super::DEFAULT_PORT;

/// A malformed RTMP URL (the API answers 400 with this).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtmpUrlError {
    /// Not `rtmp://`.
    #[error("unsupported scheme in {0:?}: only rtmp:// is supported")]
    UnsupportedScheme(String),
    /// No host after `rtmp://`.
    #[error("missing host in RTMP URL")]
    MissingHost,
    /// A port that is not a number in 1..=65535.
    #[error("invalid port {0:?} in RTMP URL")]
    BadPort(String),
    /// No application name (`rtmp://host/APP/stream`).
    #[error("missing application name in RTMP URL (expected rtmp://host[:port]/app/stream)")]
    MissingApp,
    /// No stream name (`rtmp://host/app/STREAM`).
    #[error("missing stream name in RTMP URL (expected rtmp://host[:port]/app/stream)")]
    MissingStream,
    /// Whitespace or control characters.
    #[error("RTMP URL contains whitespace or control characters")]
    InvalidCharacter,
    /// `user:password@host` (not supported: put credentials in the stream key).
    #[error("credentials in the RTMP URL host are not supported")]
    Credentials,
}

/// A parsed `rtmp://host[:port]/app[/more]/stream` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port (1935 by default).
    pub port: u16,
    /// Application: every path segment but the last (`app/more`).
    pub app: String,
    /// Stream name (stream key): the last path segment, query string included.
    pub stream: String,
}

impl RtmpUrl {
    /// Parses an RTMP URL.
    pub fn parse(url: &str) -> Result<Self, RtmpUrlError> {
        let url = url.trim();
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RtmpUrlError::InvalidCharacter);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(RtmpUrlError::UnsupportedScheme(url.to_owned()));
        };
        if !scheme.eq_ignore_ascii_case("rtmp") {
            return Err(RtmpUrlError::UnsupportedScheme(scheme.to_owned()));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(RtmpUrlError::Credentials);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(RtmpUrlError::MissingHost);
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(RtmpUrlError::BadPort(after.to_owned())),
            };
            (h, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(RtmpUrlError::MissingHost);
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(RtmpUrlError::BadPort(p.to_owned())),
            },
        };
        // The query string belongs to the stream name (stream keys often carry one).
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path = path.trim_end_matches('/');
        let Some((app, stream)) = path.rsplit_once('/') else {
            return Err(if path.is_empty() {
                RtmpUrlError::MissingApp
            } else {
                RtmpUrlError::MissingStream
            });
        };
        let app = app.trim_matches('/');
        if app.is_empty() {
            return Err(RtmpUrlError::MissingApp);
        }
        if stream.is_empty() {
            return Err(RtmpUrlError::MissingStream);
        }
        let stream = match query {
            Some(q) => format!("{stream}?{q}"),
            None => stream.to_owned(),
        };
        Ok(RtmpUrl {
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            stream,
        })
    }

    /// The `tcUrl` sent in `connect`: `rtmp://host[:port]/app`.
    pub fn tc_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == DEFAULT_PORT {
            format!("rtmp://{host}/{}", self.app)
        } else {
            format!("rtmp://{host}:{}/{}", self.port, self.app)
        }
    }

    /// The whole URL, stream key included (a secret: for storage the operator controls,
    /// never for logs).
    pub fn full(&self) -> String {
        format!("{}/{}", self.tc_url(), self.stream)
    }

    /// The URL with the stream name (which may be a secret key) masked, for logs.
    pub fn redacted(&self) -> String {
        format!("{}/***", self.tc_url())
    }
}

impl std::str::FromStr for RtmpUrl {
    type Err = RtmpUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RtmpUrl::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_good_urls() {
        let u = RtmpUrl::parse("rtmp://example.com/live/abc").unwrap();
        assert_eq!(
            u,
            RtmpUrl {
                host: "example.com".into(),
                port: 1935,
                app: "live".into(),
                stream: "abc".into()
            }
        );
        assert_eq!(u.tc_url(), "rtmp://example.com/live");
        assert_eq!(RtmpUrl::parse(&u.full()).unwrap(), u, "full() parses back");
        let u = RtmpUrl::parse("rtmp://127.0.0.1:19350/live/test").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 19350));
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:19350/live");
        let u = RtmpUrl::parse("RTMP://h/app/inst/key?token=1/2").unwrap();
        assert_eq!(u.app, "app/inst");
        assert_eq!(u.stream, "key?token=1/2");
        let u = RtmpUrl::parse("rtmp://[::1]:1936/live/s/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.stream.as_str()),
            ("::1", 1936, "s")
        );
        assert_eq!(u.tc_url(), "rtmp://[::1]:1936/live");
        assert_eq!(u.redacted(), "rtmp://[::1]:1936/live/***");
        assert!("rtmp://h/a/b".parse::<RtmpUrl>().is_ok());
    }

    #[test]
    fn parse_bad_urls() {
        use RtmpUrlError::*;
        let cases: &[(&str, RtmpUrlError)] = &[
            ("http://h/live/x", UnsupportedScheme("http".into())),
            ("rtmps://h/live/x", UnsupportedScheme("rtmps".into())),
            ("h/live/x", UnsupportedScheme("h/live/x".into())),
            ("rtmp:///live/x", MissingHost),
            ("rtmp://:1935/live/x", MissingHost),
            ("rtmp://h:99999/live/x", BadPort("99999".into())),
            ("rtmp://h:abc/live/x", BadPort("abc".into())),
            ("rtmp://h:0/live/x", BadPort("0".into())),
            ("rtmp://h", MissingApp),
            ("rtmp://h/", MissingApp),
            ("rtmp://h/live", MissingStream),
            ("rtmp://h/live/", MissingStream),
            ("rtmp://h//x", MissingApp),
            ("rtmp://h/live/a b", InvalidCharacter),
            ("rtmp://[::1/live/x", MissingHost),
            ("rtmp://u:p@h/live/x", Credentials),
        ];
        for (url, want) in cases {
            assert_eq!(RtmpUrl::parse(url).as_ref(), Err(want), "{url}");
        }
        // Display is a readable message for the API's 400 body.
        assert!(MissingStream.to_string().contains("stream name"));
    }
}
