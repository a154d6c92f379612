//! The HTTP/1 request head reader (`patgate::proxy::http1::head`): never panics, and what
//! it accepts is framed one way only.
//!
//! Input: the bytes a client sent, the head first (anything may follow it). Checked:
//! - a parsed head's length is at most the input's and at most the limit, and the same
//!   bytes read again give the same head or the same error;
//! - the limit is exact: the head passes with a limit of its own length, not one less;
//! - the head's verdict does not depend on how it arrived: every prefix of an accepted
//!   head is "not whole yet", and a prefix that is refused means the whole is too;
//! - `Chunked` framing never comes with a `Content-Length` header, and only on HTTP/1.1
//!   with `Transfer-Encoding`; `Length(n)` is one `Content-Length` of decimal `n`, never 0;
//! - an HTTP/1.1 head has exactly one `Host`; `expect_continue` only with a body on 1.1.
#![no_main]

use http::{header, Version};
use libfuzzer_sys::fuzz_target;
use patgate::proxy::http1::head::{parse_bytes, Framing, Head, HeadError, MAX_HEADERS};

/// The head size limit: small, so that the fuzzer reaches it.
const MAX: usize = 1024;

/// What two reads of a head are compared by.
fn summary(h: &Head) -> String {
    format!(
        "{} {} {:?} {:?} {:?} {} {}",
        h.parts.method, h.parts.uri, h.parts.version, h.parts.headers, h.framing, h.keep_alive, h.expect_continue
    )
}

type Verdict = Result<Option<(usize, String)>, HeadError>;

fn verdict(bytes: &[u8], max: usize) -> Verdict {
    parse_bytes(bytes, max).map(|o| o.map(|(len, h)| (len, summary(&h))))
}

fuzz_target!(|data: &[u8]| {
    let first = parse_bytes(data, MAX);
    assert_eq!(
        first
            .as_ref()
            .map(|o| o.as_ref().map(|(len, h)| (*len, summary(h))))
            .map_err(|e| *e),
        verdict(data, MAX),
        "the same bytes read twice gave two verdicts"
    );
    match &first {
        Ok(None) => assert!(data.len() < MAX, "{} bytes without a whole head were not refused", data.len()),
        Ok(Some((len, head))) => check_head(data, *len, head),
        Err(e) => {
            // Every refusal has its status; a head refused for its size is one at the limit.
            assert!(e.status().is_client_error() || e.status().is_server_error());
            if *e == HeadError::TooLarge {
                assert!(data.len() >= MAX, "a head in {} bytes refused as too large", data.len());
            }
        }
    }
    // A prefix that is refused (for a reason other than its size) means the whole is too.
    for cut in cuts(data) {
        match parse_bytes(&data[..cut], MAX) {
            Ok(Some((len, _))) => assert!(
                matches!(&first, Ok(Some((n, _))) if *n == len),
                "a prefix of {cut} bytes held a whole head of {len} bytes the whole input did not"
            ),
            Err(e) if e != HeadError::TooLarge => assert!(
                first.is_err(),
                "a prefix of {cut} bytes was refused ({e:?}) but the whole was accepted"
            ),
            _ => {}
        }
    }
});

/// Where to cut the input to try its prefixes: after each line end, and a few bytes around
/// the end of the head.
fn cuts(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let lines = data.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1);
    let n = data.len().min(MAX);
    lines
        .chain([n / 2, n.saturating_sub(1), n.saturating_sub(2), n.saturating_sub(3)])
        .filter(move |&c| c < data.len())
        .take(64)
}

fn check_head(data: &[u8], len: usize, head: &Head) {
    assert!(
        len > 0 && len <= data.len() && len <= MAX,
        "head of {len} bytes from {} bytes",
        data.len()
    );
    let bytes = &data[..len];
    assert!(bytes.ends_with(b"\r\n\r\n"), "a head that does not end with an empty line");
    assert!(
        bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r')),
        "a head with a bare LF was accepted"
    );
    // The head alone reads the same, and so does the whole input with a limit of its length.
    let want = Ok(Some((len, summary(head))));
    assert_eq!(verdict(bytes, MAX), want, "the head alone read otherwise");
    assert_eq!(verdict(data, len), want, "a limit of the head's own length refused it");
    if len > 1 {
        assert_eq!(
            verdict(data, len - 1),
            Err(HeadError::TooLarge),
            "a limit under the head's length let it pass"
        );
    }
    // Every prefix of an accepted head is not whole yet.
    for cut in (0..len).step_by((len / 64).max(1)).chain([len - 1]) {
        assert_eq!(verdict(&data[..cut], MAX), Ok(None), "a {cut}-byte prefix of a {len}-byte head");
    }

    let h = &head.parts.headers;
    assert!(h.len() <= MAX_HEADERS);
    let http11 = match head.parts.version {
        Version::HTTP_11 => true,
        Version::HTTP_10 => false,
        v => panic!("a head of version {v:?}"),
    };
    let hosts = h.get_all(header::HOST).iter().count();
    assert!(
        hosts <= 1 && (hosts == 1 || !http11),
        "{hosts} Host headers on {:?}",
        head.parts.version
    );
    if let Some(host) = h.get(header::HOST) {
        assert_eq!(patgate::proxy::host::check(host.as_bytes()), Ok(()));
    }
    let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    match head.framing {
        Framing::Chunked => {
            assert!(lengths.is_empty(), "chunked with Content-Length {lengths:?}");
            assert!(http11, "chunked on HTTP/1.0");
            let te = tokens(h, header::TRANSFER_ENCODING);
            assert!(
                te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked"),
                "chunked from Transfer-Encoding {:?}",
                h.get_all(header::TRANSFER_ENCODING).iter().collect::<Vec<_>>()
            );
        }
        Framing::Length(n) => {
            assert!(n > 0, "Length(0) instead of Empty");
            assert!(!h.contains_key(header::TRANSFER_ENCODING));
            assert_eq!(lengths.len(), 1, "Length({n}) from {lengths:?}");
            let digits = lengths[0].as_bytes();
            assert!(digits.iter().all(u8::is_ascii_digit), "Length({n}) from {digits:?}");
            assert_eq!(std::str::from_utf8(digits).ok().and_then(|s| s.parse::<u64>().ok()), Some(n));
        }
        Framing::Empty => {
            assert!(!h.contains_key(header::TRANSFER_ENCODING));
            assert!(lengths.len() <= 1);
            if let Some(v) = lengths.first() {
                assert!(
                    v.as_bytes().iter().all(|&b| b == b'0') && !v.is_empty(),
                    "Empty from Content-Length {v:?}"
                );
            }
        }
    }
    if head.expect_continue {
        assert!(http11 && head.framing != Framing::Empty);
    }
    for v in h.get_all(header::EXPECT) {
        assert!(v.as_bytes().eq_ignore_ascii_case(b"100-continue"), "Expect: {v:?} accepted");
    }
    let connection = tokens(h, header::CONNECTION);
    let close = connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let keep = connection.iter().any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
    assert_eq!(
        head.keep_alive,
        !close && (http11 || keep),
        "keep-alive from Connection {connection:?}"
    );
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
