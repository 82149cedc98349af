//! Participant tokens (JWT, HS256) and API-key checks.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// A participant's role, carried in its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the room: on air from the start, controls guests, layout and cues.
    Host,
    /// May co-host: on air after the co-host flow, or directly when publishing with WHIP.
    Guest,
    /// Watches; may ask to go on air, and becomes a guest when the host accepts.
    Viewer,
}

/// The claims of a participant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room name.
    pub room: String,
    /// Participant identity, unique in the room.
    pub identity: String,
    /// Role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why a token or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials were given.
    #[error("missing credentials")]
    Missing,
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Bad signature, bad format or bad claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid token, but for another room.
    #[error("token is for another room")]
    WrongRoom,
    /// Valid token, but its role may not do this.
    #[error("role {0:?} may not do this")]
    Forbidden(Role),
}

impl AuthError {
    /// HTTP status that fits the error: 401 for missing/invalid/expired, 403 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Expired | AuthError::Invalid(_) => 401,
            AuthError::WrongRoom | AuthError::Forbidden(_) => 403,
        }
    }
    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthorized",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::WrongRoom => "wrong_room",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

/// Mints and verifies tokens with the API secret, and checks the API key.
#[derive(Clone)]
pub struct Auth {
    api_key: String,
    enc: EncodingKey,
    dec: DecodingKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

impl Auth {
    /// Builds from the API key and secret.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Auth {
            api_key: api_key.to_owned(),
            enc: EncodingKey::from_secret(api_secret.as_bytes()),
            dec: DecodingKey::from_secret(api_secret.as_bytes()),
        }
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.enc)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Verifies a token's signature and expiry at `now_s` (seconds since the epoch).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false; // checked below against the caller's clock, with no leeway
        v.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
        let data = decode::<Claims>(token, &self.dec, &v)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if data.claims.exp <= now_s {
            return Err(AuthError::Expired);
        }
        if !valid_identity(&data.claims.identity) {
            return Err(AuthError::Invalid(
                "identity must be 1..=128 bytes without control characters".into(),
            ));
        }
        if data
            .claims
            .name
            .as_deref()
            .is_some_and(|n| !valid_display_name(n))
        {
            return Err(AuthError::Invalid(format!(
                "name must be 1..={MAX_NAME_CHARS} characters without control characters"
            )));
        }
        if !valid_name(&data.claims.room) {
            return Err(AuthError::Invalid("bad room name".into()));
        }
        Ok(data.claims)
    }

    /// Verifies a token for `room`.
    pub fn verify_for_room(
        &self,
        token: &str,
        room: &str,
        now_s: u64,
    ) -> Result<Claims, AuthError> {
        let c = self.verify(token, now_s)?;
        if c.room != room {
            return Err(AuthError::WrongRoom);
        }
        Ok(c)
    }

    /// Constant-time comparison of a presented API key.
    pub fn is_api_key(&self, presented: &str) -> bool {
        let a = self.api_key.as_bytes();
        let b = presented.as_bytes();
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Room names: 1–64 bytes of `[A-Za-z0-9_.-]`, so they are safe in URLs and paths.
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// An identity: 1 to 128 bytes of any text but control characters (a `\n` or an ANSI escape
/// would forge log lines and confuse every client that shows it).
pub fn valid_identity(identity: &str) -> bool {
    !identity.is_empty() && identity.len() <= 128 && !identity.chars().any(char::is_control)
}

/// A display name: 1 to [`MAX_NAME_CHARS`] characters, any script, no control characters.
pub fn valid_display_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control)
}

/// A room name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            room: "r1".into(),
            identity: "alice".into(),
            role: Role::Host,
            exp,
            name: None,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let a = Auth::new("k", "secret");
        let t = a.mint(&claims(1000)).unwrap();
        assert_eq!(a.verify(&t, 999).unwrap(), claims(1000));
        assert_eq!(a.verify(&t, 1000), Err(AuthError::Expired));
        assert_eq!(a.verify_for_room(&t, "r2", 10), Err(AuthError::WrongRoom));
    }

    #[test]
    fn wrong_secret_and_garbage() {
        let t = Auth::new("k", "one").mint(&claims(1000)).unwrap();
        let other = Auth::new("k", "two");
        assert!(matches!(other.verify(&t, 1), Err(AuthError::Invalid(_))));
        assert!(matches!(
            other.verify("x.y.z", 1),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(other.verify("", 1), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn api_key() {
        let a = Auth::new("key-1", "s");
        assert!(a.is_api_key("key-1"));
        assert!(!a.is_api_key("key-2"));
        assert!(!a.is_api_key(""));
    }

    #[test]
    fn names() {
        assert!(valid_identity("alice@example.com"));
        assert!(valid_identity("主播 1"));
        assert!(!valid_identity("eve\n2026-12-03T00:00:00Z INFO forged"));
        assert!(!valid_identity("\u{1b}[31mred"));
        assert!(!valid_identity(""));
        assert!(valid_display_name("小明 (guest)"));
        assert!(!valid_display_name(&"名".repeat(65)));
        assert!(!valid_display_name("  "));
        assert!(!valid_display_name("a\tb"));
        assert!(valid_name("demo-1.a_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
