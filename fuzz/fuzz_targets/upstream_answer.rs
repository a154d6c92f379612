//! The upstream answer head reader (`patgate::proxy::upstream::answer`): never panics, and
//! what it accepts is framed one way only.
//!
//! Input: one byte that says whether the request was a `HEAD` (its low bit), then the bytes
//! an upstream sent, the head first (anything may follow it). Checked:
//! - a parsed head's length is at most the input's and the limit, and the same bytes read
//!   again give the same head or the same error;
//! - the limit is exact, and every prefix of an accepted head is "not whole yet";
//! - the framing follows RFC 9112 §6.3: no body for `HEAD`, `1xx`, `204` and `304`; chunked
//!   only when `Transfer-Encoding`'s last coding is; `Length(n)` only from `Content-Length`
//!   values that all say `n`, with no `Transfer-Encoding`;
//! - a connection is kept only after an HTTP/1.1 answer framed once, by a length or
//!   chunked, that does not say `Connection: close`.
#![no_main]

use http::{header, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use patgate::proxy::upstream::answer::{parse, AnswerError, AnswerFraming, AnswerHead};

/// The head size limit: small, so that the fuzzer reaches it.
const MAX: usize = 1024;

type Verdict = Result<Option<(usize, AnswerHead)>, AnswerError>;

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let to_head = first & 1 == 1;
    let verdict: Verdict = parse(data, MAX, to_head);
    assert_eq!(verdict, parse(data, MAX, to_head), "the same bytes read twice gave two verdicts");
    match &verdict {
        Ok(None) => assert!(data.len() < MAX, "{} bytes without a whole head were not refused", data.len()),
        Ok(Some((len, head))) => check(data, *len, head, to_head),
        Err(AnswerError::TooLarge) => assert!(data.len() >= MAX, "a head in {} bytes refused as too large", data.len()),
        Err(_) => {}
    }
});

fn check(data: &[u8], len: usize, head: &AnswerHead, to_head: bool) {
    assert!(
        len > 0 && len <= data.len() && len <= MAX,
        "head of {len} bytes from {}",
        data.len()
    );
    let alone = parse(&data[..len], MAX, to_head);
    assert_eq!(
        alone.as_ref().ok().and_then(|o| o.as_ref()).map(|(n, h)| (*n, h)),
        Some((len, head)),
        "the head alone read otherwise"
    );
    assert!(
        matches!(parse(data, len, to_head), Ok(Some((n, _))) if n == len),
        "a limit of the head's own length refused it"
    );
    if len > 1 {
        assert_eq!(
            parse(data, len - 1, to_head),
            Err(AnswerError::TooLarge),
            "a limit under the head's length let it pass"
        );
    }
    for cut in (0..len).step_by((len / 64).max(1)) {
        assert_eq!(
            parse(&data[..cut], MAX, to_head),
            Ok(None),
            "a {cut}-byte prefix of a {len}-byte head"
        );
    }

    let h = &head.headers;
    let te = tokens(h, header::TRANSFER_ENCODING);
    let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let s = head.status;
    let bodiless = to_head || s.is_informational() || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED;
    match head.framing {
        AnswerFraming::Empty => assert!(
            bodiless || (!h.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty()),
            "no body for {s} with {te:?} and {lengths:?}"
        ),
        AnswerFraming::Length(n) => {
            assert!(!bodiless && n > 0 && !h.contains_key(header::TRANSFER_ENCODING));
            for v in &lengths {
                for e in v.as_bytes().split(|&b| b == b',') {
                    assert_eq!(
                        std::str::from_utf8(e.trim_ascii()).ok().and_then(|d| d.parse::<u64>().ok()),
                        Some(n),
                        "Length({n}) from {lengths:?}"
                    );
                }
            }
        }
        AnswerFraming::Chunked => assert!(!bodiless && te.last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))),
        AnswerFraming::UntilClose => {
            assert!(!bodiless && !head.keep_alive);
            assert!(h.contains_key(header::TRANSFER_ENCODING) || lengths.is_empty());
        }
    }
    if head.keep_alive {
        let close = tokens(h, header::CONNECTION).iter().any(|t| t.eq_ignore_ascii_case(b"close"));
        assert!(
            head.version == Version::HTTP_11 && !close,
            "kept after {:?} with Connection: close {close}",
            head.version
        );
        assert!(
            !(h.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty() && !bodiless),
            "kept after an answer framed twice"
        );
    }
}

/// The non-empty, trimmed comma-separated elements of every `name` header.
fn tokens(h: &http::HeaderMap, name: header::HeaderName) -> Vec<&[u8]> {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}
