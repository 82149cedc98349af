//! Secrets kept in Redis (the stream keys of RTMP outputs) are sealed with AES-256-GCM under a
//! key derived from the fleet's API secret: someone who reads Redis learns where a room
//! publishes, not with which key.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

fn cipher(secret: &str) -> Aes256Gcm {
    let key = Sha256::new()
        .chain_update(b"cohost cluster state v1\0")
        .chain_update(secret.as_bytes())
        .finalize();
    Aes256Gcm::new(&key)
}

/// `plain` sealed: hex of a random 96-bit nonce and the ciphertext with its tag.
pub fn seal(secret: &str, plain: &str) -> String {
    let nonce: [u8; 12] = rand::random();
    match cipher(secret).encrypt(Nonce::from_slice(&nonce), plain.as_bytes()) {
        Ok(ct) => format!("{}{}", hex::encode(nonce), hex::encode(ct)),
        Err(_) => String::new(),
    }
}

/// The plain text of [`seal`]'s output; `None` if it was not sealed with `secret`.
pub fn open(secret: &str, sealed: &str) -> Option<String> {
    let raw = hex::decode(sealed).ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    let plain = cipher(secret).decrypt(Nonce::from_slice(nonce), ct).ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_secret() {
        let url = "rtmp://cdn.example/live/sk_0123456789";
        let s = seal("fleet-secret-0123", url);
        assert!(!s.contains("sk_"), "{s}");
        assert_ne!(s, seal("fleet-secret-0123", url), "a fresh nonce each time");
        assert_eq!(open("fleet-secret-0123", &s).as_deref(), Some(url));
        assert_eq!(open("another-secret", &s), None);
        let mut tampered = s.clone();
        tampered.replace_range(30..32, "00");
        assert_eq!(open("fleet-secret-0123", &tampered), None);
        assert_eq!(open("fleet-secret-0123", "zz"), None);
    }
}
