//! An upstream's answer head (RFC 9112 §4 and §6.3): the status line and headers, read by
//! `httparse` within `upstream.max_response_head_bytes`, and how its body is framed.
//!
//! The framing, in RFC 9112's order: an answer to `HEAD`, a `1xx`, `204` or `304` has no
//! body, whatever it says; else `Transfer-Encoding` decides (chunked when its last coding
//! is, else the body runs until the upstream closes); else `Content-Length` (every value
//! the same decimal number, or the answer is refused); else until close. An answer framed
//! by both, or until close, or of HTTP/1.0, or saying `Connection: close`, ends its
//! connection: nothing after it could be trusted to be where the next answer starts.
//!
//! Pure: bytes in, a head and its length out. Fuzzed (`fuzz/fuzz_targets/upstream_answer.rs`)
//! and tested against hyper's client (`tests/it/differential.rs`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

/// The most header lines of an answer.
pub const MAX_HEADERS: usize = 100;

/// An answer's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: AnswerFraming,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes, at least one.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// Why an answer head is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer head is larger than upstream.max_response_head_bytes")]
    TooLarge,
    #[error("the answer has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("the answer head is not HTTP/1.x ({0})")]
    Malformed(&'static str),
    #[error("the answer's Content-Length is not one decimal number")]
    Length,
}

/// Reads the answer head at the start of `bytes`: `Ok(None)` while it is not whole yet.
/// `to_head`: the request was a `HEAD`, so the answer has no body.
pub fn parse(bytes: &[u8], max_bytes: usize, to_head: bool) -> Result<Option<(usize, AnswerHead)>, AnswerError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut lines);
    let len = match answer.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= max_bytes => return Err(AnswerError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(AnswerError::TooManyHeaders),
        Err(e) => return Err(AnswerError::Malformed(error_text(e))),
    };
    if len > max_bytes {
        return Err(AnswerError::TooLarge);
    }
    let version = match answer.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let status = answer
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(AnswerError::Malformed("status code"))?;
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    for line in answer.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| AnswerError::Malformed("header name"))?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| AnswerError::Malformed("header value"))?;
        headers.append(name, value);
    }
    let closes = elements(&headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"));
    let mut keep_alive = version == Version::HTTP_11 && !closes;
    let bodiless = to_head || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        AnswerFraming::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // Framed twice: the length is ignored, and the connection not trusted after.
        if headers.contains_key(header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        match elements(&headers, header::TRANSFER_ENCODING).last() {
            Some(last) if last.eq_ignore_ascii_case(b"chunked") => AnswerFraming::Chunked,
            _ => AnswerFraming::UntilClose,
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        match content_length(&headers)? {
            0 => AnswerFraming::Empty,
            n => AnswerFraming::Length(n),
        }
    } else {
        AnswerFraming::UntilClose
    };
    if framing == AnswerFraming::UntilClose {
        keep_alive = false;
    }
    Ok(Some((
        len,
        AnswerHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        },
    )))
}

/// The one length every `Content-Length` value (and list element) names.
fn content_length(headers: &HeaderMap) -> Result<u64, AnswerError> {
    let mut found = None;
    for element in headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
    {
        let digits = element.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(AnswerError::Length);
        }
        let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(AnswerError::Length);
        }
        found = Some(n);
    }
    found.ok_or(AnswerError::Length)
}

/// The trimmed, non-empty comma-separated elements of every `name` header.
fn elements(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line end",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::Version => "version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(head: &str, to_head: bool) -> Result<(AnswerFraming, bool), AnswerError> {
        parse(head.as_bytes(), 16 * 1024, to_head).map(|h| {
            let (_, h) = h.expect("a whole head");
            (h.framing, h.keep_alive)
        })
    }

    #[test]
    fn answers_are_framed_in_the_order_of_rfc_9112() {
        use AnswerFraming::*;
        let cases: &[(&str, bool, Result<(AnswerFraming, bool), AnswerError>)] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, Err(AnswerError::Length)),
            ("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, Err(AnswerError::Length)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, Ok((Empty, true))),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, Ok((Empty, true))),
            ("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", false, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, Ok((UntilClose, false))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false, Ok((Chunked, false))),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Ok((UntilClose, false))),
            ("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false, Ok((Length(5), false))),
            ("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 5\r\n\r\n", false, Ok((Length(5), false))),
        ];
        for (head, to_head, want) in cases {
            assert_eq!(&framing(head, *to_head), want, "{head:?}");
        }
    }

    #[test]
    fn heads_are_whole_within_the_limit_or_refused() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let len = head.len() - 1;
        assert_eq!(parse(head, len, false).unwrap().unwrap().0, len);
        assert_eq!(parse(&head[..len - 1], len, false), Ok(None));
        assert_eq!(parse(head, len - 1, false), Err(AnswerError::TooLarge));
        assert_eq!(parse(&head[..len - 1], len - 1, false), Err(AnswerError::TooLarge));
        assert!(matches!(parse(b"HTTP/2 200 OK\r\n\r\n", 1024, false), Err(AnswerError::Malformed(_))));
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\nA B: c\r\n\r\n", 1024, false), Err(AnswerError::Malformed(_))));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse(many.as_bytes(), 16 * 1024, false), Err(AnswerError::TooManyHeaders));
    }
}
