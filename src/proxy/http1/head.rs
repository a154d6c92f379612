//! An HTTP/1 request head, read once and strictly (RFC 9112, as a server in front of
//! another server must): httparse for the syntax (no obs-fold, no blank before a colon, no
//! control byte, single spaces in the request line), then the rules that decide how the
//! body is framed and whom the request is for:
//!
//! - `Content-Length`: one line, decimal digits only;
//! - `Transfer-Encoding`: exactly `chunked` on HTTP/1.1 (anything else: 501; on HTTP/1.0: 400);
//! - both at once: 400, and the connection closes;
//! - `Host`: exactly one on HTTP/1.1, at most one on HTTP/1.0, valid ([`host::check`]);
//! - `Expect`: `100-continue` or nothing (417).
//!
//! The head's bytes become the request's parts without a copy. Pure: no I/O; fuzzed
//! (`fuzz/fuzz_targets/http1_head.rs`) and tested against hyper (`tests/it/differential.rs`).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::proxy::host::{self, HostError};

/// The most header lines a request head may have (as many as hyper's default).
pub const MAX_HEADERS: usize = 100;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked coding ([`super::chunked`]).
    Chunked,
}

/// A request head, parsed and judged.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// Whether the client keeps the connection open after the answer (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body: the client waits for a
    /// `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Why a request head was refused. Each is answered with [`HeadError::status`] and the
/// connection closes: what follows on it cannot be told apart from this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head ({0})")]
    Malformed(&'static str),
    #[error("HTTP version not supported")]
    Version,
    #[error("request head too large")]
    TooLarge,
    #[error("request head has too many header lines")]
    TooManyHeaders,
    #[error("request target is not a valid URI")]
    Target,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("Content-Length is not a single decimal number")]
    ContentLength,
    #[error("request has both Content-Length and Transfer-Encoding")]
    BothLengths,
    #[error("Transfer-Encoding other than chunked is not supported")]
    TransferCoding,
    #[error("Transfer-Encoding is not allowed on HTTP/1.0")]
    TransferEncodingOnHttp10,
    #[error("only Expect: 100-continue is supported")]
    Expectation,
}

impl HeadError {
    /// The status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::TooLarge | HeadError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            HeadError::Expectation => StatusCode::EXPECTATION_FAILED,
            HeadError::Malformed(_)
            | HeadError::Target
            | HeadError::Host(_)
            | HeadError::ContentLength
            | HeadError::BothLengths
            | HeadError::TransferEncodingOnHttp10 => StatusCode::BAD_REQUEST,
        }
    }
}

/// Where a head's parts lie in its bytes.
struct Spans {
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    http11: bool,
    headers: [(u32, u32, u32, u32); MAX_HEADERS],
    count: usize,
}

/// Reads the request head at the start of `buf`: `Ok(None)` while it is not whole (and
/// `buf` is under `max_bytes`); when it is, takes its bytes off `buf` and returns it
/// judged. However the head arrives, split across reads or whole, the same `max_bytes`
/// holds.
pub fn parse(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Head>, HeadError> {
    let Some(spans) = locate(buf, max_bytes)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(spans.len).freeze();
    judge(&bytes, &spans).map(Some)
}

/// Finds where the head's parts lie: httparse's syntax, and the size limits.
fn locate(buf: &[u8], max_bytes: usize) -> Result<Option<Spans>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n > max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(e) => return Err(HeadError::Malformed(syntax(e))),
    };
    // httparse takes a bare LF for a line end, as RFC 9112 §2.2 lets a recipient; a server in
    // front of another does not (the same bytes could end a line for one and not the other).
    let head = &buf[..len];
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err(HeadError::Malformed("a line ends in a bare LF"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let at = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    let mut spans = Spans {
        len,
        method: (at(method.as_bytes()), at(method.as_bytes()) + method.len()),
        target: (at(target.as_bytes()), at(target.as_bytes()) + target.len()),
        http11: version == 1,
        headers: [(0, 0, 0, 0); MAX_HEADERS],
        count: req.headers.len(),
    };
    for (h, span) in req.headers.iter().zip(spans.headers.iter_mut()) {
        // A head is at most `max_bytes` long: offsets fit in 32 bits.
        let off = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        let (n, v) = (at(h.name.as_bytes()), at(h.value));
        *span = (off(n), off(n + h.name.len()), off(v), off(v + h.value.len()));
    }
    Ok(Some(spans))
}

/// A request line that names another HTTP version (`HTTP/2.0`, `HTTP/0.9`...) is 505;
/// one that httparse could not read to its version for another reason is 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(_), Some(_), Some(v), None)
            if v.len() == 8 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit() =>
        {
            HeadError::Version
        }
        _ => HeadError::Malformed("invalid request line"),
    }
}

/// What is wrong with a head's syntax, in a few words.
fn syntax(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version | httparse::Error::TooManyHeaders => "invalid HTTP version",
    }
}

/// Builds the request's parts from the head's bytes and judges its framing and `Host`.
fn judge(bytes: &Bytes, spans: &Spans) -> Result<Head, HeadError> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::from_bytes(&bytes[spans.method.0..spans.method.1]).map_err(|_| HeadError::Malformed("invalid method"))?;
    parts.uri = Uri::from_maybe_shared(bytes.slice(spans.target.0..spans.target.1)).map_err(|_| HeadError::Target)?;
    parts.version = if spans.http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut map = HeaderMap::with_capacity(spans.count);
    for &(n0, n1, v0, v1) in &spans.headers[..spans.count] {
        let name = HeaderName::from_bytes(&bytes[n0 as usize..n1 as usize]).map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(v0 as usize..v1 as usize))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        map.append(name, value);
    }
    parts.headers = map;
    let h = &parts.headers;

    // Host.
    let mut hosts = h.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(HostError::Repeated.into()),
        (None, None) if spans.http11 => return Err(HostError::Missing.into()),
        (Some(v), None) => host::check(v.as_bytes())?,
        (None, None) => {}
    }

    // Framing.
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (_, Some(_)) => return Err(HeadError::ContentLength),
        (Some(v), None) => Some(decimal(v.as_bytes()).ok_or(HeadError::ContentLength)?),
        (None, None) => None,
    };
    let chunked = match h.contains_key(header::TRANSFER_ENCODING) {
        false => false,
        true if !spans.http11 => return Err(HeadError::TransferEncodingOnHttp10),
        true => {
            // Exactly one element, `chunked`, on one line: no empty element beside it either.
            let mut lines = h.get_all(header::TRANSFER_ENCODING).iter();
            match (lines.next(), lines.next()) {
                (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => true,
                _ => return Err(HeadError::TransferCoding),
            }
        }
    };
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(HeadError::BothLengths),
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };

    // What the connection does next, and what the client waits for.
    let (mut close, mut keep) = (false, false);
    for t in tokens(h, &header::CONNECTION) {
        close |= t.eq_ignore_ascii_case(b"close");
        keep |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    let keep_alive = !close && (spans.http11 || keep);
    let mut expect_continue = false;
    for v in h.get_all(header::EXPECT) {
        match v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            true => expect_continue = true,
            false => return Err(HeadError::Expectation),
        }
    }
    // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
    let expect_continue = expect_continue && spans.http11 && framing != Framing::Empty;
    Ok(Head {
        parts,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// The comma-separated elements of every `name` header, trimmed; empty ones skipped.
fn tokens<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A decimal number of 1 to 19 digits and nothing else, as `Content-Length` must be.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Parses a whole request head from `bytes` (for fuzzing and tests): `None` when it is
/// not whole.
pub fn parse_bytes(bytes: &[u8], max_bytes: usize) -> Result<Option<(usize, Head)>, HeadError> {
    let mut buf = BytesMut::from(bytes);
    let before = buf.len();
    Ok(parse(&mut buf, max_bytes)?.map(|h| (before - buf.len(), h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn head(text: &str) -> Result<Head, HeadError> {
        parse_bytes(text.as_bytes(), MAX).map(|h| h.expect("a whole head").1)
    }

    #[test]
    fn plain_heads_are_read_without_a_copy() {
        let h = head("GET /org/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: gate.example\r\n\r\n").unwrap();
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri.path(), "/org/repo.git/info/refs");
        assert_eq!(h.parts.uri.query(), Some("service=git-upload-pack"));
        assert_eq!((h.framing, h.keep_alive, h.expect_continue), (Framing::Empty, true, false));
        let h = head("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.expect_continue), (Framing::Length(5), true));
        let h = head("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(h.keep_alive && h.framing == Framing::Empty);
        // One leading empty line is skipped (RFC 9112 §2.2).
        assert!(head("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert!(matches!(parse_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX), Ok(None)));
    }

    #[test]
    fn ambiguous_or_invalid_heads_are_refused() {
        use HeadError as E;
        let cases: &[(&str, HeadError)] = &[
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                E::BothLengths,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
                E::BothLengths,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                E::ContentLength,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", E::ContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", E::ContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", E::ContentLength),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                E::ContentLength,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", E::TransferCoding),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                E::TransferCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                E::TransferCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                E::TransferCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                E::TransferCoding,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", E::TransferCoding),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n",
                E::TransferCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n",
                E::TransferCoding,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", E::TransferEncodingOnHttp10),
            ("GET / HTTP/1.1\r\n\r\n", E::Host(HostError::Missing)),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", E::Host(HostError::Repeated)),
            ("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", E::Host(HostError::Repeated)),
            ("GET / HTTP/1.1\r\nHost: u:p@evil.example\r\n\r\n", E::Host(HostError::Userinfo)),
            ("GET / HTTP/1.1\r\nHost: ex ample\r\n\r\n", E::Host(HostError::Invalid)),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", E::Host(HostError::Invalid)),
            ("GET / HTTP/1.1\r\nHost: x.example:99999\r\n\r\n", E::Host(HostError::Port)),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", E::Expectation),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", E::Version),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", E::Malformed("invalid request line")),
            ("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", E::Malformed("invalid request line")),
        ];
        for (text, want) in cases {
            let got = head(text).map(|_| ()).unwrap_err();
            assert_eq!(got.status(), want.status(), "{text:?}: {got}");
            if !matches!(want, E::Malformed(_)) {
                assert_eq!(got, *want, "{text:?}");
            }
        }
        for text in [
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n\r\n",
            "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(head(text).map(|_| ()).unwrap_err().status(), StatusCode::BAD_REQUEST, "{text:?}");
        }
    }

    #[test]
    fn the_size_limit_holds_however_the_head_is_split() {
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(MAX));
        // Whole, in one buffer.
        assert_eq!(parse_bytes(big.as_bytes(), MAX).map(|_| ()), Err(HeadError::TooLarge));
        // Arriving bit by bit: refused as soon as the limit is reached, with no end in sight.
        let mut buf = BytesMut::new();
        let mut refused = false;
        for piece in big.as_bytes().chunks(10_000) {
            buf.extend_from_slice(piece);
            match parse(&mut buf, MAX) {
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    refused = true;
                    break;
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        assert!(refused);
        // One byte under the limit passes.
        let filler = MAX - "GET / HTTP/1.1\r\nHost: a\r\nX-Big: \r\n\r\n".len();
        let fits = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(filler));
        assert_eq!(fits.len(), MAX);
        assert!(parse_bytes(fits.as_bytes(), MAX).unwrap().is_some());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(parse_bytes(text.as_bytes(), MAX).map(|_| ()), Err(HeadError::TooManyHeaders));
    }
}
