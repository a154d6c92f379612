//! Reading the PAT out of a request's `Authorization` header. Pure: no I/O, no logging,
//! no allocation beyond the decoded credential; property-tested and fuzzed.
//!
//! Accepted forms, with a case-insensitive scheme:
//! - `Basic base64(user:PAT)`: the PAT as the password, with any username (empty too);
//! - `Basic base64(PAT:)`: the PAT as the username with an empty password
//!   (`git clone https://PAT@host/org/repo.git`);
//! - `Basic base64(PAT:PAT)`: both;
//! - `Bearer PAT`.
//!
//! A header that cannot be read at all (two of them, too long, not visible ASCII, bad
//! base64, no colon, two different tokens) is a [`CredentialError`], answered with 400.
//! A header that reads fine but holds no well-formed token is [`Credential::Malformed`],
//! answered like a missing or unknown token with 401, so that nothing tells them apart.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use super::token::{looks_like_token, TokenSecret};

/// The longest `Authorization` value read; anything longer is refused unread.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the `Authorization` header held.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// No header, an unknown scheme, or Basic with both parts empty.
    Missing,
    /// Something was offered, but it is not a well-formed patgate token.
    Malformed,
    /// A token with the right shape (not yet looked up; its checksum not yet checked).
    Token(TokenSecret),
}

/// An `Authorization` header that cannot be read. Each message is one line and never
/// holds any part of the header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("more than one Authorization header")]
    MultipleHeaders,
    #[error("Authorization header longer than {MAX_AUTHORIZATION_LEN} bytes")]
    TooLong,
    #[error("Authorization header is not visible ASCII")]
    NotAscii,
    #[error("Basic credentials are not valid base64")]
    BadBase64,
    #[error("Basic credentials are not UTF-8")]
    NotUtf8,
    #[error("Basic credentials lack the ':' between user and password")]
    MissingColon,
    #[error("Basic credentials hold two different tokens")]
    ConflictingTokens,
}

/// Reads the credential from request headers.
pub fn from_headers(headers: &HeaderMap) -> Result<Credential, CredentialError> {
    match authorization(headers)? {
        None => Ok(Credential::Missing),
        Some(value) => parse(value.as_bytes()),
    }
}

/// The request's one `Authorization` value, if it has one; more than one is an error.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, CredentialError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next();
    if values.next().is_some() {
        return Err(CredentialError::MultipleHeaders);
    }
    Ok(value)
}

/// Parses one `Authorization` value.
pub fn parse(value: &[u8]) -> Result<Credential, CredentialError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(CredentialError::TooLong);
    }
    // Without short-circuit, so that the check runs over whole vectors.
    if !value.iter().fold(true, |ok, &b| ok & ((0x20..0x7f).contains(&b) | (b == b'\t'))) {
        return Err(CredentialError::NotAscii);
    }
    let value = trim_ows(value);
    let (scheme, rest) = match value.iter().position(|&b| is_ows(b)) {
        Some(i) => (&value[..i], trim_ows(&value[i..])),
        None => (value, &[][..]),
    };
    // Visible ASCII, so this cannot fail.
    let rest = std::str::from_utf8(rest).map_err(|_| CredentialError::NotAscii)?;
    if scheme.eq_ignore_ascii_case(b"basic") {
        basic(rest)
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        Ok(token_or_malformed(rest))
    } else {
        Ok(Credential::Missing)
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ows(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ows(*last) {
            break;
        }
        v = rest;
    }
    v
}

fn basic(encoded: &str) -> Result<Credential, CredentialError> {
    if encoded.is_empty() {
        return Ok(Credential::Missing);
    }
    // Usual credentials (a username and a token) are decoded on the stack; longer ones
    // on the heap.
    let mut small = [0u8; 256];
    let mut large = Vec::new();
    let buf: &mut [u8] = if encoded.len() <= small.len() / 3 * 4 {
        &mut small
    } else {
        large.resize(encoded.len() / 4 * 3 + 3, 0);
        &mut large
    };
    let n = BASE64.decode_slice(encoded, buf).map_err(|_| CredentialError::BadBase64)?;
    let decoded = std::str::from_utf8(&buf[..n]).map_err(|_| CredentialError::NotUtf8)?;
    let (user, password) = decoded.split_once(':').ok_or(CredentialError::MissingColon)?;
    let candidate = match (looks_like_token(user), looks_like_token(password)) {
        (true, true) if user != password => return Err(CredentialError::ConflictingTokens),
        (_, true) => password,
        (true, false) => user,
        (false, false) if password.is_empty() && user.is_empty() => return Ok(Credential::Missing),
        (false, false) if password.is_empty() => user,
        (false, false) => password,
    };
    Ok(token_or_malformed(candidate))
}

fn token_or_malformed(text: &str) -> Credential {
    if text.is_empty() {
        return Credential::Missing;
    }
    match TokenSecret::parse_shape(text) {
        Some(t) => Credential::Token(t),
        None => Credential::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn tok() -> TokenSecret {
        TokenSecret::generate()
    }

    fn parse_str(v: &str) -> Result<Credential, CredentialError> {
        parse(v.as_bytes())
    }

    #[test]
    fn every_accepted_form_yields_the_token() {
        let t = tok();
        let s = t.expose();
        let forms = [
            format!("Basic {}", b64(&format!("git:{s}"))),
            format!("Basic {}", b64(&format!(":{s}"))),
            format!("Basic {}", b64(&format!("{s}:"))),
            format!("Basic {}", b64(&format!("{s}:{s}"))),
            format!("Basic {}", b64(&format!("{s}:x-oauth-basic"))),
            format!("basic {}", b64(&format!("u:{s}"))),
            format!("BASIC {}", b64(&format!("u:{s}"))),
            format!("Basic \t {} ", b64(&format!("u:{s}"))),
            format!("Basic {}", b64(&format!("u:{s}")).trim_end_matches('=')),
            format!("Bearer {s}"),
            format!("bearer {s}"),
            format!("BEARER\t{s}"),
            format!("  Bearer   {s}  "),
        ];
        for f in forms {
            assert_eq!(parse_str(&f), Ok(Credential::Token(t.clone())), "form {f:?}");
        }
    }

    #[test]
    fn absent_or_empty_credentials_are_missing() {
        assert_eq!(from_headers(&HeaderMap::new()), Ok(Credential::Missing));
        for v in ["Basic", "Basic ", "Bearer", "Bearer  ", "Negotiate abc", "Digest x=y", ""] {
            assert_eq!(parse_str(v), Ok(Credential::Missing), "{v:?}");
        }
        assert_eq!(parse_str(&format!("Basic {}", b64(":"))), Ok(Credential::Missing));
    }

    #[test]
    fn offered_but_not_a_token_is_malformed() {
        let t = tok();
        let mut wrong_sum = t.expose().to_owned();
        let last = wrong_sum.pop().unwrap();
        wrong_sum.push(if last == 'a' { 'b' } else { 'a' });
        for v in [
            format!("Basic {}", b64("alice:hunter2")),
            format!("Basic {}", b64("alice:")),
            "Bearer patg_short".to_owned(),
            "Bearer not-a-token".to_owned(),
            format!("Bearer {} extra", t.expose()),
        ] {
            assert_eq!(parse_str(&v), Ok(Credential::Malformed), "{v:?}");
        }
        // A wrong checksum is the lookup's business: see `auth::tests`.
        for v in [format!("Basic {}", b64(&format!("u:{wrong_sum}"))), format!("Bearer {wrong_sum}")] {
            let Ok(Credential::Token(t)) = parse_str(&v) else { panic!("{v:?}") };
            assert!(!t.checksum_ok());
        }
    }

    #[test]
    fn unreadable_headers_are_errors() {
        use CredentialError::*;
        let a = tok();
        let b = tok();
        let cases: Vec<(Vec<u8>, CredentialError)> = vec![
            (b"Basic !!!notbase64".to_vec(), BadBase64),
            (b"Basic YWJj ZGVm".to_vec(), BadBase64),
            (format!("Basic {}", b64("no-colon-here")).into_bytes(), MissingColon),
            (b"Basic /w==".to_vec(), NotUtf8),
            (b"Bearer \xff\xfe".to_vec(), NotAscii),
            (b"Bearer a\x00b".to_vec(), NotAscii),
            (format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN)).into_bytes(), TooLong),
            (
                format!("Basic {}", b64(&format!("{}:{}", a.expose(), b.expose()))).into_bytes(),
                ConflictingTokens,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(parse(&v), Err(want), "{:?}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let t = tok();
        let mut h = HeaderMap::new();
        let v = HeaderValue::from_str(&format!("Bearer {}", t.expose())).unwrap();
        h.append(AUTHORIZATION, v.clone());
        h.append(AUTHORIZATION, v);
        assert_eq!(from_headers(&h), Err(CredentialError::MultipleHeaders));
    }

    #[test]
    fn error_messages_hold_no_part_of_the_value() {
        let t = tok();
        let v = format!("Basic {}", b64(&format!("{}:{}", t.expose(), tok().expose())));
        let e = parse_str(&v).unwrap_err();
        assert!(!e.to_string().contains(t.expose()));
        assert!(!e.to_string().contains(&v));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&v);
        }

        #[test]
        fn never_panics_on_any_basic_payload(p in proptest::collection::vec(any::<u8>(), 0..200)) {
            let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(p));
            let _ = parse(v.as_bytes());
        }

        #[test]
        fn any_username_with_the_token_as_password_works(user in "[^:]{0,40}") {
            let t = TokenSecret::generate();
            let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", t.expose())));
            prop_assert_eq!(parse(v.as_bytes()), Ok(Credential::Token(t)));
        }
    }
}
