//! `Authorization` parsing (`patgate::auth::credentials`): never panics, refuses what is
//! too long or not visible ASCII, yields only tokens of the token's shape (prefix, length,
//! base62: the checksum is checked on the request path only when the lookup misses), and
//! reads a header the same way from raw bytes and from a request's `HeaderMap`.
#![no_main]

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use patgate::auth::credentials::{self, Credential, CredentialError, MAX_AUTHORIZATION_LEN};
use patgate::auth::token::{TokenSecret, PREFIX, TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let parsed = credentials::parse(data);
    match &parsed {
        Ok(Credential::Token(t)) => {
            let text = t.expose();
            assert!(TokenSecret::parse_shape(text).is_some(), "a Token that fails the shape check");
            assert!(text.len() == TOKEN_LEN && text.starts_with(PREFIX));
            assert!(text[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(data.len() <= MAX_AUTHORIZATION_LEN);
            // The secret never prints.
            assert!(!format!("{t:?}").contains(t.expose()));
            assert!(!format!("{t}").contains(t.expose()));
        }
        Ok(Credential::Missing | Credential::Malformed) => {}
        Err(CredentialError::TooLong) => assert!(data.len() > MAX_AUTHORIZATION_LEN),
        Err(CredentialError::NotAscii) => {
            assert!(data.iter().any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b)))
        }
        Err(CredentialError::MultipleHeaders) => panic!("parse saw more than one header"),
        Err(_) => {}
    }
    // Error messages are one fixed line each, never a part of the header.
    if let Err(e) = &parsed {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && msg.len() < 80);
    }
    // Through a HeaderMap: one header reads as parse() does; two are refused.
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.clone());
        assert_eq!(credentials::from_headers(&headers), parsed);
        headers.append(AUTHORIZATION, value);
        assert_eq!(credentials::from_headers(&headers), Err(CredentialError::MultipleHeaders));
    }
});
