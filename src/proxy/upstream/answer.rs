//! An upstream's answer head (RFC 9112 §4 and §6.3): the status line and headers, read by
//! `httparse` within `upstream.max_response_head_bytes`, and how its body is framed.
//!
//! The framing, in RFC 9112's order: an answer to `HEAD`, a `1xx`, `204` or `304` has no
//! body, whatever it says; else `Transfer-Encoding` decides (chunked when its last coding
//! is, else the body runs until the upstream closes; on HTTP/1.0 it is refused, as RFC 9112
//! §6.1 says its framing is faulty); else `Content-Length` (every value
//! the same decimal number, or the answer is refused); else until close. An answer framed
//! by both, or until close, or of HTTP/1.0, or saying `Connection: close`, ends its
//! connection: nothing after it could be trusted to be where the next answer starts.
//!
//! The body is cut from the bytes read by [`BodyReader`], which the client's
//! answer body (`upstream::exchange`) and the differential test both run.
//!
//! Pure: bytes in, a head and its length out, and the body's pieces. Fuzzed (`fuzz/fuzz_targets/upstream_answer.rs`)
//! and tested against hyper's client (`tests/it/answers.rs`).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use crate::proxy::http1::chunked::{self, ChunkError};

/// The most header lines of an answer.
pub const MAX_HEADERS: usize = 100;
/// The most interim (`1xx`) answers before the final one.
pub const MAX_INTERIM: usize = 16;

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
    #[error("more than {MAX_INTERIM} interim answers")]
    Interim,
    #[error("an HTTP/1.0 answer has Transfer-Encoding")]
    TransferEncodingOn10,
}

/// Reads the final answer's head at the start of `bytes`, past any interim (`1xx`) ones
/// but `101`: its head, and the length of all the heads read. Each head is held to
/// `max_bytes`.
pub fn parse_final(bytes: &[u8], max_bytes: usize, to_head: bool) -> Result<Option<(usize, AnswerHead)>, AnswerError> {
    let mut at = 0;
    for _ in 0..=MAX_INTERIM {
        let Some((len, head)) = parse(&bytes[at..], max_bytes, to_head)? else {
            return Ok(None);
        };
        at += len;
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Some((at, head)));
        }
    }
    Err(AnswerError::Interim)
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
        // RFC 9112 §6.1: its framing is faulty.
        if version == Version::HTTP_10 {
            return Err(AnswerError::TransferEncodingOn10);
        }
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

/// What [`BodyReader::next`] found in the bytes read.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The next of the body's data.
    Data(Bytes),
    /// The body ended here; what follows it is not the body's.
    End,
    /// More bytes are needed.
    More,
    /// The chunked coding is broken.
    Failed(ChunkError),
}

/// Cuts an answer's body from the bytes read, by its framing (not `Empty`).
#[derive(Debug)]
pub enum BodyReader {
    Length(u64),
    Chunked(chunked::Decoder),
    UntilClose,
}

impl BodyReader {
    /// The reader of a body framed so; `None` for no body.
    pub fn of(framing: AnswerFraming) -> Option<BodyReader> {
        match framing {
            AnswerFraming::Empty => None,
            AnswerFraming::Length(n) => Some(BodyReader::Length(n)),
            AnswerFraming::Chunked => Some(BodyReader::Chunked(chunked::Decoder::new())),
            AnswerFraming::UntilClose => Some(BodyReader::UntilClose),
        }
    }

    /// Takes the body's next piece from the front of `buf`, sharing its bytes.
    pub fn next(&mut self, buf: &mut BytesMut) -> Piece {
        loop {
            match self {
                BodyReader::Length(0) => return Piece::End,
                _ if buf.is_empty() => return Piece::More,
                BodyReader::Length(left) => {
                    let n = (buf.len() as u64).min(*left);
                    *left -= n;
                    return Piece::Data(buf.split_to(n as usize).freeze());
                }
                BodyReader::Chunked(decoder) => {
                    let step = decoder.decode(buf);
                    if let Some(e) = decoder.error() {
                        return Piece::Failed(e);
                    }
                    if let Some(range) = step.data {
                        return Piece::Data(buf.split_to(step.used).freeze().slice(range));
                    }
                    buf.advance(step.used);
                    if decoder.is_done() {
                        return Piece::End;
                    }
                }
                BodyReader::UntilClose => return Piece::Data(buf.split().freeze()),
            }
        }
    }

    /// Whether the upstream's closing the connection ends the body where it is.
    pub fn ends_at_close(&self) -> bool {
        matches!(self, BodyReader::UntilClose | BodyReader::Length(0))
    }

    /// What is left, when it is known.
    pub fn left(&self) -> Option<u64> {
        match self {
            BodyReader::Length(n) => Some(*n),
            _ => None,
        }
    }
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

    type Framed = Result<(AnswerFraming, bool), AnswerError>;

    fn framing(head: &str, to_head: bool) -> Framed {
        parse(head.as_bytes(), 16 * 1024, to_head).map(|h| {
            let (_, h) = h.expect("a whole head");
            (h.framing, h.keep_alive)
        })
    }

    #[test]
    fn answers_are_framed_in_the_order_of_rfc_9112() {
        use AnswerFraming::*;
        let cases: &[(&str, bool, Framed)] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false, Ok((Length(5), true))),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false,
                Err(AnswerError::Length),
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, Err(AnswerError::Length)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, Ok((Empty, true))),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, Ok((Empty, true))),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Ok((Empty, true)),
            ),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, Ok((Chunked, true))),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                false,
                Ok((Chunked, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false,
                Ok((UntilClose, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Ok((Chunked, false)),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Ok((UntilClose, false))),
            ("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false, Ok((Length(5), false))),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Err(AnswerError::TransferEncodingOn10),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 5\r\n\r\n",
                false,
                Ok((Length(5), false)),
            ),
        ];
        for (head, to_head, want) in cases {
            assert_eq!(&framing(head, *to_head), want, "{head:?}");
        }
    }

    #[test]
    fn bodies_are_cut_by_their_framing() {
        let mut buf = BytesMut::from(&b"hello world"[..]);
        let mut r = BodyReader::Length(5);
        assert_eq!(r.next(&mut buf), Piece::Data(Bytes::from_static(b"hello")));
        assert_eq!(r.next(&mut buf), Piece::End);
        assert_eq!(&buf[..], b" world");
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\nX: 1\r\n\r\nnext"[..]);
        let mut r = BodyReader::of(AnswerFraming::Chunked).unwrap();
        assert_eq!(r.next(&mut buf), Piece::Data(Bytes::from_static(b"abc")));
        assert_eq!(r.next(&mut buf), Piece::End);
        assert_eq!(&buf[..], b"next");
        let mut buf = BytesMut::from(&b"3;\x01\r\nabc"[..]);
        let mut r = BodyReader::of(AnswerFraming::Chunked).unwrap();
        assert_eq!(r.next(&mut buf), Piece::Failed(ChunkError::Extension));
        let mut r = BodyReader::UntilClose;
        assert_eq!(r.next(&mut BytesMut::new()), Piece::More);
        assert!(r.ends_at_close() && !BodyReader::Length(1).ends_at_close());
    }

    #[test]
    fn interim_answers_are_skipped_to_the_final_one() {
        let two =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (len, head) = parse_final(two, 1024, false).unwrap().unwrap();
        assert_eq!((len, head.status), (two.len(), StatusCode::OK));
        assert_eq!(parse_final(&two[..60], 1024, false), Ok(None));
        let many = "HTTP/1.1 102 Processing\r\n\r\n".repeat(MAX_INTERIM + 1);
        assert_eq!(parse_final(many.as_bytes(), 1024, false), Err(AnswerError::Interim));
        let switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            parse_final(switched, 1024, false).unwrap().unwrap().1.status,
            StatusCode::SWITCHING_PROTOCOLS
        );
    }

    #[test]
    fn heads_are_whole_within_the_limit_or_refused() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let len = head.len() - 1;
        assert_eq!(parse(head, len, false).unwrap().unwrap().0, len);
        assert_eq!(parse(&head[..len - 1], len, false), Ok(None));
        assert_eq!(parse(head, len - 1, false), Err(AnswerError::TooLarge));
        assert_eq!(parse(&head[..len - 1], len - 1, false), Err(AnswerError::TooLarge));
        assert!(matches!(
            parse(b"HTTP/2 200 OK\r\n\r\n", 1024, false),
            Err(AnswerError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nA B: c\r\n\r\n", 1024, false),
            Err(AnswerError::Malformed(_))
        ));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse(many.as_bytes(), 16 * 1024, false), Err(AnswerError::TooManyHeaders));
    }
}
