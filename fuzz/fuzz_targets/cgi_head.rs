//! The CGI answer head reader (`patgate::proxy::cgi::parse_head`), which reads what
//! `git http-backend` writes before its body: never panics, and the answer it makes does
//! not depend on how the bytes arrive.
//!
//! Input: the bytes the process wrote, the head first (anything may follow it). Checked:
//! - the same bytes read again give the same head or the same error;
//! - an accepted head's length is at most the input's, and it ends in a blank line (LF LF
//!   or CRLF CRLF); the prefixes that stop short of that blank line are "not whole yet",
//!   so the head read from a pipe in pieces is the head read whole;
//! - a status is a valid code, and no hop-by-hop header reaches the client;
//! - no accepted head is longer than `MAX_CGI_HEADER`, and without a blank line only
//!   more than that many bytes are refused.
#![no_main]

use http::header;
use libfuzzer_sys::fuzz_target;
use patgate::proxy::cgi::{parse_head, MAX_CGI_HEADER};

/// Hop-by-hop headers, which a CGI head must never pass on.
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
];

fuzz_target!(|data: &[u8]| {
    let verdict = parse_head(data).map_err(|e| e.to_string());
    assert_eq!(
        verdict,
        parse_head(data).map_err(|e| e.to_string()),
        "the same bytes read twice gave two verdicts"
    );
    match verdict {
        Ok(Some((len, head))) => {
            assert!(len <= data.len(), "a head of {len} bytes in {} bytes", data.len());
            assert!(len <= MAX_CGI_HEADER, "a head of {len} bytes passed the limit");
            let whole = &data[..len];
            assert!(
                whole.ends_with(b"\n\n") || whole.ends_with(b"\r\n\r\n"),
                "a head that ends in no blank line"
            );
            // The last bytes are where a blank line could be found early; the rest is quadratic.
            for cut in len.saturating_sub(8)..len {
                let prefix = &data[..cut];
                assert!(
                    matches!(parse_head(prefix), Ok(None)),
                    "a prefix of {cut} bytes of a {len}-byte head was read"
                );
            }
            assert!((100..=999).contains(&head.status.as_u16()));
            for name in &HOP_BY_HOP {
                assert!(!head.headers.contains_key(name), "{name} passed on");
            }
        }
        Ok(None) => assert!(data.len() <= MAX_CGI_HEADER, "{} bytes without a head were not refused", data.len()),
        Err(_) => {}
    }
});
