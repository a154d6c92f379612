//! Token secrets: the `patg_` format, its checksum, minting from the OS CSPRNG, and the
//! SHA-256 hash that is the only form of a secret that is ever stored or compared.
//!
//! A secret is `patg_`, then [`RANDOM_LEN`] base62 characters of randomness, then a
//! [`CHECKSUM_LEN`]-character base62 CRC32 of everything before it. The checksum lets a
//! secret scanner recognise a token by its shape and lets the proxy reject a mistyped or
//! invented token without a lookup. Nothing here logs, and [`TokenSecret`] never prints
//! its value through `Debug` or `Display`.

use std::fmt;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// What every patgate token starts with.
pub const PREFIX: &str = "patg_";
/// Base62 characters of randomness (40 × log2(62) ≈ 238 bits).
pub const RANDOM_LEN: usize = 40;
/// Base62 characters of the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// The length of every well-formed token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The SHA-256 of a token secret: the key under which a token is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

/// A hash is already uniform: its first eight bytes are a good table hash. Only hashes of
/// secrets minted here are ever inserted, so callers cannot choose colliding keys.
impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// The hasher for tables keyed by [`TokenHash`]: it passes the key's own bits through
/// instead of hashing them again.
#[derive(Default, Clone, Copy)]
pub struct PassThroughHasher(u64);

impl std::hash::Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for TokenHash; folds anything else in, should it ever be used so.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Builds [`PassThroughHasher`]s.
pub type PassThroughState = std::hash::BuildHasherDefault<PassThroughHasher>;

impl TokenHash {
    /// Hashes a secret's text.
    pub fn of(secret: &str) -> Self {
        Self::of_bytes(secret.as_bytes())
    }

    fn of_bytes(secret: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A token secret in clear text. It exists only between minting and showing it once, or
/// between reading a credential and hashing it. `Debug` and `Display` print `<redacted>`.
/// Held inline (every token has the same length), so reading one from a request does
/// not allocate.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret([u8; TOKEN_LEN]);

impl TokenSecret {
    /// Mints a new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let mut s = String::with_capacity(TOKEN_LEN);
        s.push_str(PREFIX);
        push_random_base62(&rng, &mut s, RANDOM_LEN);
        let sum = checksum(&s);
        s.push_str(&sum);
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(s.as_bytes());
        TokenSecret(out)
    }

    /// Accepts `text` if it has the token's shape and a correct checksum.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_shape(text).filter(TokenSecret::checksum_ok)
    }

    /// Accepts `text` if it has the token's shape (prefix, length, alphabet), leaving the
    /// checksum to [`TokenSecret::checksum_ok`]. The request path checks the checksum
    /// only when the lookup misses: a token found by its hash was minted here.
    pub fn parse_shape(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != TOKEN_LEN || !text.starts_with(PREFIX) || !b[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(text.as_bytes());
        Some(TokenSecret(out))
    }

    /// The clear text, for showing once to the person who created the token.
    pub fn expose(&self) -> &str {
        // Only well-formed (ASCII) tokens are ever held.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// True when the checksum matches the rest.
    pub fn checksum_ok(&self) -> bool {
        has_valid_shape(self.expose())
    }

    /// The stored form of this secret.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of_bytes(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// True when `text` looks like a token: prefix, length, alphabet and checksum all hold.
/// Runs in constant work per length and allocates nothing.
pub fn has_valid_shape(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != TOKEN_LEN || !text.starts_with(PREFIX) {
        return false;
    }
    if !b[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (body, sum) = text.split_at(TOKEN_LEN - CHECKSUM_LEN);
    checksum_matches(body, sum.as_bytes())
}

/// True when `text` starts like a patgate token, whatever the rest holds.
pub fn looks_like_token(text: &str) -> bool {
    text.starts_with(PREFIX)
}

fn checksum_value(body: &str) -> u32 {
    crc32fast::hash(body.as_bytes())
}

fn checksum(body: &str) -> String {
    let mut v = u64::from(checksum_value(body));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out.iter().map(|&c| c as char).collect()
}

fn checksum_matches(body: &str, sum: &[u8]) -> bool {
    let mut v: u64 = 0;
    for &c in sum {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return false,
        };
        v = v * 62 + u64::from(d);
    }
    v == u64::from(checksum_value(body))
}

/// Appends `n` uniformly distributed base62 characters (rejection sampling, no modulo bias).
pub(crate) fn push_random_base62(rng: &SystemRandom, out: &mut String, n: usize) {
    let mut added = 0;
    let mut buf = [0u8; 64];
    while added < n {
        rng.fill(&mut buf).expect("the OS random number generator failed");
        for &byte in &buf {
            // 248 = 4 × 62: bytes below it map onto base62 without bias.
            if byte < 248 && added < n {
                out.push(BASE62[(byte % 62) as usize] as char);
                added += 1;
            }
        }
    }
}

/// A random base62 string of `n` characters, for public ids.
pub(crate) fn random_base62(n: usize) -> String {
    let mut s = String::with_capacity(n);
    push_random_base62(&SystemRandom::new(), &mut s, n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        for _ in 0..100 {
            let t = TokenSecret::generate();
            let s = t.expose();
            assert_eq!(s.len(), TOKEN_LEN);
            assert!(s.starts_with("patg_"));
            assert!(s[5..].bytes().all(|c| c.is_ascii_alphanumeric()));
            assert!(has_valid_shape(s), "{s} should validate");
        }
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(TokenSecret::generate(), TokenSecret::generate());
    }

    #[test]
    fn any_single_character_change_breaks_the_checksum() {
        let t = TokenSecret::generate();
        let s = t.expose().to_owned();
        for i in PREFIX.len()..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).unwrap();
            assert!(!has_valid_shape(&changed), "change at {i} went unnoticed");
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let t = TokenSecret::generate();
        let s = t.expose();
        assert!(!has_valid_shape(""));
        assert!(!has_valid_shape("patg_"));
        assert!(!has_valid_shape(&s[..s.len() - 1]));
        assert!(!has_valid_shape(&format!("{s}0")));
        assert!(!has_valid_shape(&s.replacen("patg_", "patx_", 1)));
        assert!(!has_valid_shape(&s.replacen("patg_", "PATG_", 1)));
        let mut with_dash = s.to_owned();
        with_dash.replace_range(10..11, "-");
        assert!(!has_valid_shape(&with_dash));
        // Non-ASCII of the right byte length.
        let mut b = s.as_bytes().to_vec();
        b.truncate(TOKEN_LEN - 2);
        let mut u = String::from_utf8(b).unwrap();
        u.push('é');
        assert_eq!(u.len(), TOKEN_LEN);
        assert!(!has_valid_shape(&u));
    }

    #[test]
    fn the_checksum_is_six_base62_characters_of_crc32() {
        let body = format!("{PREFIX}{}", "A".repeat(RANDOM_LEN));
        let sum = checksum(&body);
        assert_eq!(sum.len(), 6);
        assert!(checksum_matches(&body, sum.as_bytes()));
        // The largest CRC32 still fits.
        let mut v = u64::from(u32::MAX);
        let mut digits = 0;
        while v > 0 {
            v /= 62;
            digits += 1;
        }
        assert!(digits <= CHECKSUM_LEN);
    }

    #[test]
    fn secrets_never_print() {
        let t = TokenSecret::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
        assert!(!format!("{t}").contains(t.expose()));
        assert!(!format!("{:?}", t.hash()).contains(t.expose()));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // SHA-256("abc")
        let h = TokenHash::of("abc");
        assert_eq!(h.0[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
