//! The token format (`patgate::auth::token`): `has_valid_shape` and `TokenSecret::parse`
//! agree, accept only `patg_` + 46 base62 characters, and the checksum catches every
//! single-character change of a valid token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patgate::auth::token::{has_valid_shape, looks_like_token, TokenSecret, PREFIX, TOKEN_LEN};

/// A token minted by `TokenSecret::generate`, so that the mutation half is deterministic.
const EXAMPLE_VALID: &str = "patg_ACnnw5BcuENcwpKpqJJOcp9jxBmzQMI79afXDtsn0NR7yJ";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    assert!(has_valid_shape(EXAMPLE_VALID), "the fixed token no longer has a valid shape");

    // Any text: the two entry points agree, and what passes has the documented shape.
    if let Ok(text) = std::str::from_utf8(data) {
        let ok = has_valid_shape(text);
        let parsed = TokenSecret::parse(text);
        assert_eq!(ok, parsed.is_some());
        if let Some(t) = parsed {
            assert_eq!(t.expose(), text);
            assert_eq!(text.len(), TOKEN_LEN);
            assert!(text.starts_with(PREFIX) && looks_like_token(text));
            assert!(text[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(t.hash(), TokenSecret::parse(text).unwrap().hash());
            assert!(!format!("{t:?} {t}").contains(text));
        }
    }

    // A valid token with some characters after the prefix changed: one change is always
    // caught by the checksum; more may, rarely, collide, but never break the shape rules.
    if data.len() >= 2 {
        let mut token = EXAMPLE_VALID.as_bytes().to_vec();
        let mut changed = 0;
        for pair in data.chunks_exact(2).take(4) {
            let at = PREFIX.len() + usize::from(pair[0]) % (TOKEN_LEN - PREFIX.len());
            let to = BASE62[usize::from(pair[1]) % BASE62.len()];
            if token[at] != to {
                token[at] = to;
                changed += 1;
            }
        }
        let text = std::str::from_utf8(&token).expect("base62 is ASCII");
        let ok = has_valid_shape(text);
        if changed == 1 || text == EXAMPLE_VALID {
            assert_eq!(ok, text == EXAMPLE_VALID, "a one-character change passed the checksum: {text}");
        }
    }
});
