//! ICE servers announced to clients (CONTRACT "clients in the field", RFC 9725 §4.4): STUN
//! and TURN URLs from `--ice-servers`, and per-participant, time-limited TURN credentials from
//! `--turn-secret` in the coturn `use-auth-secret` REST scheme (username
//! `<expiry unix s>:<identity>`, password `base64(HMAC-SHA1(secret, username))`). Pure: the
//! caller passes `now`.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// How long minted TURN credentials stay valid.
pub const TURN_TTL_S: u64 = 12 * 3600;

/// The configured servers.
#[derive(Clone, Default)]
pub struct IceConfig {
    stun: Vec<String>,
    turn: Vec<String>,
    turn_secret: Option<String>,
}

impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("IceConfig")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// One server as a browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`/`turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceConfig {
    /// From `--ice-servers` (comma-separated `stun:`, `stuns:`, `turn:`, `turns:` URLs) and
    /// `--turn-secret`.
    pub fn parse(list: &str, turn_secret: Option<String>) -> Result<Self, String> {
        let mut c = IceConfig {
            turn_secret: turn_secret.filter(|s| !s.is_empty()),
            ..Default::default()
        };
        for u in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let ok_chars = u
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b','));
            let (scheme, rest) = u.split_once(':').unwrap_or(("", ""));
            if !ok_chars || rest.is_empty() {
                return Err(format!("`{u}` is not a STUN/TURN URL"));
            }
            match scheme {
                "stun" | "stuns" => c.stun.push(u.to_owned()),
                "turn" | "turns" => c.turn.push(u.to_owned()),
                _ => return Err(format!("`{u}`: scheme must be stun, stuns, turn or turns")),
            }
        }
        if !c.turn.is_empty() && c.turn_secret.is_none() {
            return Err("TURN servers need --turn-secret (the coturn static-auth-secret)".into());
        }
        Ok(c)
    }

    /// Nothing configured.
    pub fn is_empty(&self) -> bool {
        self.stun.is_empty() && self.turn.is_empty()
    }

    /// TURN credentials for `identity`, valid until `now_s + TURN_TTL_S`.
    pub fn turn_credentials(&self, identity: &str, now_s: u64) -> Option<(String, String)> {
        let secret = self.turn_secret.as_ref()?;
        let username = format!("{}:{identity}", now_s + TURN_TTL_S);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        Some((username, password))
    }

    /// The servers for a participant (`None`: an unauthenticated caller, who gets STUN only).
    pub fn servers(&self, identity: Option<&str>, now_s: u64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some((u, p))) = (
            self.turn.is_empty(),
            identity.and_then(|i| self.turn_credentials(i, now_s)),
        ) {
            out.push(IceServer {
                urls: self.turn.clone(),
                username: Some(u),
                credential: Some(p),
            });
        }
        out
    }

    /// `Link` header values (RFC 9725 §4.4), one per URL.
    pub fn links(&self, identity: Option<&str>, now_s: u64) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.servers(identity, now_s) {
            for url in &s.urls {
                let mut l = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                    l.push_str(&format!(
                        "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                    ));
                }
                out.push(l);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_rest_credentials() {
        let c = IceConfig::parse(
            "stun:stun.example.net:3478, turn:turn.example.net:3478?transport=udp",
            Some("north".into()),
        )
        .unwrap();
        let (u, p) = c.turn_credentials("alice", 1_000).unwrap();
        assert_eq!(u, format!("{}:alice", 1_000 + TURN_TTL_S));
        // Computed outside (Python: base64(hmac.new(b"north", b"44200:alice", sha1))).
        assert_eq!(u, "44200:alice");
        assert_eq!(p, "1vNaS77UCjBJCWK08WajVYWd0+w=");
        let links = c.links(Some("alice"), 1_000);
        assert_eq!(links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
        assert!(links[1].starts_with(
            "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\""
        ));
        assert!(links[1].ends_with("credential-type=\"password\""));
        // Without an identity: STUN only, no credentials.
        assert_eq!(c.links(None, 1_000).len(), 1);
        assert!(!format!("{c:?}").contains("north"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(IceConfig::parse("http://x", None).is_err());
        assert!(
            IceConfig::parse("turn:x", None).is_err(),
            "TURN needs a secret"
        );
        assert!(IceConfig::parse("stun:", None).is_err());
        assert!(IceConfig::parse("stun:a\"b", None).is_err());
        assert!(IceConfig::parse("", None).unwrap().is_empty());
    }
}
