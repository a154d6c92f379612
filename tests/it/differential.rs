//! patgate's HTTP/1 request reader against hyper's, on the same bytes.
//!
//! Each input is a byte stream a client might send on one connection: one or more
//! requests, pipelined, perhaps cut short. patgate's side reads it as its server does:
//! [`head::parse_bytes`], then the body by its [`Framing`] (`Content-Length` bytes, or the
//! strict [`chunked::Decoder`]), then the next request while the connection is kept alive.
//! hyper's side is hyper's HTTP/1 server (`hyper::server::conn::http1`) over
//! `tokio::io::duplex`, with a service that records each request's method, target, `Host`
//! values and whole body, and answers 200. Each side gives the requests it read, in order,
//! and whether it refused the connection's next bytes (and why).
//!
//! The two must agree, except where patgate is stricter on purpose. Every difference is
//! classified by patgate's reason ([`HeadError`] or [`ChunkError`]), and must be one of
//! [`ALLOWED`], just below: patgate refuses, for that reason, what hyper reads. The one
//! kind of head that hyper refuses and patgate reads is listed apart, in [`LOOSER`].
//!
//! Nothing else may differ: never a request that both read but read differently (another
//! method, target, `Host` or body: the two would frame the connection differently), and
//! never another request that hyper refuses and patgate reads. An unlisted difference
//! fails the test with the input shown (escaped, cut at 600 characters).
//!
//! Inputs: a hand-written table of tricky streams, each with the outcome it must have
//! ([`table_of_tricky_inputs`]), and generated streams (proptest, a fixed seed and a
//! bounded number of cases: [`generated_streams`]).

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use patgate::proxy::host::HostError;
use patgate::proxy::http1::chunked::{self, ChunkError};
use patgate::proxy::http1::head::{self, Framing, HeadError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The differences allowed, each keyed by patgate's reason: patgate refuses, for that
/// reason, what hyper reads (or does not refuse yet), and why patgate is right to.
const ALLOWED: &[(Why, &str)] = &[
    (
        Why::Head(HeadError::BothLengths),
        "patgate refuses `Content-Length` with `Transfer-Encoding` (RFC 9112 §6.1: a server in front of another must not guess); hyper reads the body as chunked and drops the length.",
    ),
    (
        Why::Head(HeadError::TransferCoding),
        "patgate refuses (501) any `Transfer-Encoding` but exactly one `chunked`; hyper reads `gzip, chunked`, `chunked, chunked` or two lines ending in `chunked` as chunked, passing the other codings on (both refuse a last coding other than `chunked`).",
    ),
    (
        Why::Head(HeadError::ContentLength),
        "patgate refuses two `Content-Length` lines even of equal values; hyper takes equal lines as one (both refuse a list, `5, 5`).",
    ),
    (
        Why::Head(HeadError::Host(HostError::Missing)),
        "patgate refuses an HTTP/1.1 request without `Host` (RFC 9112 §3.2); hyper does not look at it.",
    ),
    (
        Why::Head(HeadError::Host(HostError::Repeated)),
        "patgate refuses two `Host` lines; hyper passes both on.",
    ),
    (
        Why::Head(HeadError::Host(HostError::Invalid)),
        "patgate refuses a `Host` that is not `uri-host [\":\" port]`; hyper does not check it.",
    ),
    (
        Why::Head(HeadError::Host(HostError::Userinfo)),
        "patgate refuses a `Host` with userinfo (`u@h`); hyper does not check it.",
    ),
    (
        Why::Head(HeadError::Host(HostError::Port)),
        "patgate refuses a `Host` port over 65535 or not a number; hyper does not check it.",
    ),
    (
        Why::Head(HeadError::Malformed("a line ends in a bare LF")),
        "patgate refuses a head with a line ended by a bare LF, or a leading one (RFC 9112 §2.2 lets a recipient take it; an intermediary must not, as the server behind it may not); hyper takes LF for CRLF.",
    ),
    (
        Why::Head(HeadError::Expectation),
        "patgate refuses (417) an `Expect` other than `100-continue` (RFC 9110 §10.1.1); hyper ignores it.",
    ),
    (
        Why::Chunk(ChunkError::Extension),
        "patgate refuses a chunk extension with a control byte or DEL, or over 4 KiB; hyper skips extensions unread (both refuse a bare LF in one).",
    ),
    (
        Why::Chunk(ChunkError::Trailer),
        "patgate refuses a trailer line ended by a bare LF (`0\\r\\nX-T: 1\\n\\r\\n`); hyper reads on to the next CR LF CR LF, taking what it passed (a pipelined request) for trailers, where another server would end the body at once: the bytes are framed two ways.",
    ),
    (
        Why::Chunk(ChunkError::LineEnd),
        "patgate refuses a bare LF for the empty line that ends a chunked body (`0\\r\\n\\n`, or after trailers); hyper takes it (both refuse a bare LF after a chunk size or chunk data).",
    ),
    (
        Why::Chunk(ChunkError::Size),
        "patgate refuses a chunk size of more than 16 hex digits, leading zeros counted (`00000000000000001`); hyper only refuses a value over 64 bits.",
    ),
];

/// The differences the other way, each keyed by what patgate reads in a head that hyper
/// refuses: the kind of head, hyper's error, and why patgate may read it. None now: a
/// `Transfer-Encoding` with empty list elements (`, chunked,`, or `chunked` and an empty
/// second line) was one, and is refused (501) since; the case stays, to be found if it
/// comes back.
const LOOSER: &[(Looser, &str, &str)] = &[];

/// What makes a head one that patgate reads and hyper refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looser {
    EmptyTransferCodingElement,
}

/// Which [`Looser`] case a head accepted by patgate is, if any.
fn looser(head: &head::Head) -> Option<Looser> {
    let te = head.parts.headers.get_all(http::header::TRANSFER_ENCODING);
    let empty = te
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|e| e.trim_ascii().is_empty()));
    empty.then_some(Looser::EmptyTransferCodingElement)
}

/// The most bytes of a head, as patgate's default `server.max_header_bytes`.
const MAX_HEAD: usize = 16 * 1024;

/// Why a side stopped reading a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Head(HeadError),
    Chunk(ChunkError),
}

/// One request as a reader read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    method: String,
    target: String,
    hosts: Vec<Vec<u8>>,
    body: Vec<u8>,
}

/// What one side read of a stream: its requests in order, then whether it refused what
/// came next (patgate's reason, or hyper's error as text). Running out of bytes is no
/// refusal. For patgate, also which [`Looser`] case each head it accepted is (the last
/// one perhaps without its body).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read<R> {
    requests: Vec<Req>,
    refused: Option<R>,
    looser: Vec<Option<Looser>>,
}

/// patgate's reader, as its server runs it over a connection's bytes.
fn patgate_read(input: &[u8]) -> Read<Why> {
    let mut requests = Vec::new();
    let mut notes = Vec::new();
    let mut rest = input;
    macro_rules! done {
        ($requests:expr, $refused:expr) => {
            Read {
                requests: $requests,
                refused: $refused,
                looser: notes,
            }
        };
    }
    loop {
        if rest.is_empty() {
            return done!(requests, None);
        }
        let (len, head) = match head::parse_bytes(rest, MAX_HEAD) {
            Ok(Some(h)) => h,
            Ok(None) => return done!(requests, None),
            Err(e) => return done!(requests, Some(Why::Head(e))),
        };
        rest = &rest[len..];
        notes.push(looser(&head));
        let body = match head.framing {
            Framing::Empty => Vec::new(),
            Framing::Length(n) => {
                let Some(body) = usize::try_from(n).ok().and_then(|n| rest.get(..n)) else {
                    return done!(requests, None);
                };
                rest = &rest[body.len()..];
                body.to_vec()
            }
            Framing::Chunked => {
                let mut decoder = chunked::Decoder::new();
                let mut body = Vec::new();
                loop {
                    let step = decoder.decode(rest);
                    if let Some(r) = step.data {
                        body.extend_from_slice(&rest[r]);
                    }
                    rest = &rest[step.used..];
                    if let Some(e) = decoder.error() {
                        return done!(requests, Some(Why::Chunk(e)));
                    }
                    if decoder.is_done() {
                        break body;
                    }
                    if rest.is_empty() {
                        return done!(requests, None);
                    }
                }
            }
        };
        let h = &head.parts;
        requests.push(Req {
            method: h.method.to_string(),
            target: h.uri.to_string(),
            hosts: h
                .headers
                .get_all(http::header::HOST)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
            body,
        });
        if !head.keep_alive {
            return done!(requests, None);
        }
    }
}

/// What hyper's service saw of one request: the request, or why its body failed.
type Seen = Result<Req, BodyEnd>;

#[derive(Debug, Clone)]
enum BodyEnd {
    /// The stream ended inside the body.
    Incomplete,
    /// The body was not what its head said.
    Refused(String),
}

/// hyper's HTTP/1 server, reading `input` from a client that then half-closes.
async fn hyper_read(input: &[u8]) -> Read<String> {
    let (mut client, server) = tokio::io::duplex(input.len() + 64 * 1024);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let req = Req {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                hosts: parts
                    .headers
                    .get_all(http::header::HOST)
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect(),
                body: Vec::new(),
            };
            let got = match body.collect().await {
                Ok(b) => Ok(Req {
                    body: b.to_bytes().to_vec(),
                    ..req
                }),
                Err(e) if incomplete(&e) => Err(BodyEnd::Incomplete),
                Err(e) => Err(BodyEnd::Refused(chain(&e))),
            };
            record.lock().unwrap().push(got);
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
    let drain = async {
        let mut answers = Vec::new();
        let _ = client.read_to_end(&mut answers).await;
    };
    let (served, ()) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(conn, drain) })
        .await
        .unwrap_or_else(|_| panic!("hyper did not finish reading {}", escape(input)));
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut requests = Vec::new();
    for s in seen {
        match s {
            Ok(r) => requests.push(r),
            Err(BodyEnd::Incomplete) => {
                return Read {
                    requests,
                    refused: None,
                    looser: Vec::new(),
                }
            }
            Err(BodyEnd::Refused(e)) => {
                return Read {
                    requests,
                    refused: Some(format!("body: {e}")),
                    looser: Vec::new(),
                }
            }
        }
    }
    let refused = match served {
        Ok(()) => None,
        Err(e) if incomplete(&e) => None,
        Err(e) => Some(chain(&e)),
    };
    Read {
        requests,
        refused,
        looser: Vec::new(),
    }
}

/// Whether hyper's error is the stream ending inside a message.
fn incomplete(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        source = s.source();
    }
    false
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How the two reads of one input compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The same requests, and both refused what followed or neither did.
    Same,
    /// patgate refused, for this allowed reason, where hyper read on or waited for more.
    Stricter(Why),
    /// hyper refused a head that patgate read, of this allowed kind.
    Looser(Looser),
}

/// A difference no entry of [`ALLOWED`] covers.
struct Unlisted {
    input: Vec<u8>,
    patgate: Read<Why>,
    hyper: Read<String>,
    what: String,
}

impl fmt::Display for Unlisted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.what)?;
        writeln!(f, "  input:   {}", escape(&self.input))?;
        writeln!(f, "  patgate: {}", show(&self.patgate))?;
        write!(f, "  hyper:   {}", show(&self.hyper))
    }
}

fn show<R: fmt::Debug>(r: &Read<R>) -> String {
    let reqs: Vec<String> = r
        .requests
        .iter()
        .map(|q| {
            let hosts: Vec<String> = q.hosts.iter().map(|h| escape(h)).collect();
            format!("{} {} host={hosts:?} body={}", q.method, q.target, escape(&q.body))
        })
        .collect();
    format!("{reqs:?}, refused: {:?}", r.refused)
}

/// The input as text, escaped, at most 600 characters of it.
fn escape(bytes: &[u8]) -> String {
    let text: String = bytes.escape_ascii().to_string();
    match text.char_indices().nth(600) {
        Some((at, _)) => format!("\"{}\"... ({} bytes)", &text[..at], bytes.len()),
        None => format!("\"{text}\""),
    }
}

/// Reads `input` both ways and classifies the difference.
async fn compare(input: &[u8]) -> Result<Outcome, Box<Unlisted>> {
    let patgate = patgate_read(input);
    let hyper = hyper_read(input).await;
    let unlisted = |what: String| {
        Err(Box::new(Unlisted {
            input: input.to_vec(),
            patgate: patgate.clone(),
            hyper: hyper.clone(),
            what,
        }))
    };
    // Up to where patgate stopped, both read the same requests.
    let n = patgate.requests.len();
    for (i, (p, h)) in patgate.requests.iter().zip(&hyper.requests).enumerate() {
        if p != h {
            return unlisted(format!("request {i} is read differently"));
        }
    }
    // hyper refused a head patgate read (whole, or without all of its body).
    let k = hyper.requests.len();
    if hyper.refused.is_some() && (k < n || (k == n && patgate.refused.is_none())) {
        if let (Some(Some(l)), Some(e)) = (patgate.looser.get(k), &hyper.refused) {
            if LOOSER.iter().any(|(x, says, _)| x == l && e == says) {
                return Ok(Outcome::Looser(*l));
            }
        }
    }
    if hyper.requests.len() < n {
        return unlisted(match &hyper.refused {
            Some(e) => format!("hyper refuses request {} ({e}), patgate reads it", hyper.requests.len()),
            None => format!("patgate reads {n} requests, hyper {}", hyper.requests.len()),
        });
    }
    match (&patgate.refused, &hyper.refused) {
        (None, None) | (Some(_), Some(_)) if hyper.requests.len() == n => Ok(Outcome::Same),
        (None, _) => unlisted(match &hyper.refused {
            Some(e) => format!("hyper refuses after request {}: {e}; patgate does not", hyper.requests.len()),
            None => format!("hyper reads {} requests, patgate {n}", hyper.requests.len()),
        }),
        (Some(why), _) => match ALLOWED.iter().find(|(w, _)| w == why) {
            Some(_) => Ok(Outcome::Stricter(*why)),
            None => unlisted(format!("patgate refuses ({why:?}) where hyper does not; no entry allows it")),
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Hand-written streams, each with the outcome it must have.
#[test]
fn table_of_tricky_inputs() {
    use HeadError as H;
    use Outcome::{Looser, Same, Stricter};
    let head = |e| Stricter(Why::Head(e));
    let chunk = |e| Stricter(Why::Chunk(e));
    let long_ext = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(5000)
    );
    let cases: Vec<(&str, &[u8], Outcome)> = vec![
        // Framing.
        ("plain GET", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        ("length body", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", Same),
        ("length with leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello", Same),
        ("length +5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", Same),
        ("length 0x5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", Same),
        ("two different lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", Same),
        (
            "two equal length lines",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            head(H::ContentLength),
        ),
        ("a list of equal lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", Same),
        (
            "CL + TE",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            head(H::BothLengths),
        ),
        (
            "TE + CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            head(H::BothLengths),
        ),
        (
            "chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            Same,
        ),
        (
            "Chunked, any case",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            Same,
        ),
        (
            "TE gzip, chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            head(H::TransferCoding),
        ),
        (
            "TE chunked, chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            head(H::TransferCoding),
        ),
        (
            "TE on two lines",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            head(H::TransferCoding),
        ),
        (
            "TE chunked and an empty TE line",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            Same,
        ),
        (
            "TE with empty list elements",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            Same,
        ),
        ("an empty TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", Same),
        ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Same),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Same),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", Same),
        // Chunk lines.
        (
            "chunk extensions",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d e\"\r\nhello\r\n0;x\r\n\r\n",
            Same,
        ),
        (
            "a control byte in a chunk extension",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n",
            chunk(ChunkError::Extension),
        ),
        (
            "NUL in a chunk extension",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00b\r\nhello\r\n0\r\n\r\n",
            chunk(ChunkError::Extension),
        ),
        (
            "DEL in a chunk extension",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\x7f\r\nhello\r\n0\r\n\r\n",
            chunk(ChunkError::Extension),
        ),
        (
            "a bare LF in a chunk extension",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n",
            Same,
        ),
        ("a chunk extension over 4 KiB", long_ext.as_bytes(), chunk(ChunkError::Extension)),
        (
            "a bare LF after a chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            Same,
        ),
        (
            "chunk data not ended by CRLF",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            Same,
        ),
        (
            "17 hex digits of chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nf0000000000000003\r\nabc\r\n0\r\n\r\n",
            Same,
        ),
        (
            "17 hex digits of chunk size, leading zeros",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n",
            chunk(ChunkError::Size),
        ),
        (
            "16 hex digits of chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n",
            Same,
        ),
        (
            "a blank after a chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            Same,
        ),
        (
            "a chunk size with 0x",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            Same,
        ),
        (
            "a chunk size with a sign",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            Same,
        ),
        // Trailers.
        (
            "trailers",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-Sum: 1\r\nX-Other:\r\n\r\n",
            Same,
        ),
        (
            "a bare LF ending a trailer, then a pipelined request",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            chunk(ChunkError::Trailer),
        ),
        (
            "a bare LF ending the last chunk line",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            Same,
        ),
        (
            "a bare LF ending a chunked body, then a pipelined request",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            chunk(ChunkError::LineEnd),
        ),
        (
            "a bare LF ending the trailers",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n\n",
            chunk(ChunkError::LineEnd),
        ),
        (
            "a bare LF ending a trailer, then another trailer",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\nY: 2\r\n\r\n",
            Same,
        ),
        (
            "chunk data ended by CR CR LF",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\r\n0\r\n\r\n",
            Same,
        ),
        (
            "a trailer without a colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
            Same,
        ),
        (
            "a folded trailer",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
            Same,
        ),
        // Heads.
        ("a bare LF in the head", b"GET / HTTP/1.1\nHost: a\n\n", head(H::Malformed("a line ends in a bare LF"))),
        (
            "a bare LF ending one header",
            b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
            head(H::Malformed("a line ends in a bare LF")),
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n", Same),
        ("a blank before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Same),
        ("a control byte in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Same),
        ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        ("HTTP/2.0 in the request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Same),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", head(H::Host(HostError::Missing))),
        ("no Host on HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", Same),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", head(H::Host(HostError::Repeated))),
        ("two equal Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", head(H::Host(HostError::Repeated))),
        ("a Host with a blank", b"GET / HTTP/1.1\r\nHost: ex ample\r\n\r\n", head(H::Host(HostError::Invalid))),
        ("a Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", head(H::Host(HostError::Invalid))),
        ("a Host with userinfo", b"GET / HTTP/1.1\r\nHost: u:p@evil\r\n\r\n", head(H::Host(HostError::Userinfo))),
        ("a Host port too large", b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", head(H::Host(HostError::Port))),
        ("an IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Same),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", Same),
        ("Expect: 100-continue", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", Same),
        ("another Expect", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: fancy\r\nContent-Length: 2\r\n\r\nhi", head(H::Expectation)),
        ("absolute-form target", b"GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        ("asterisk-form target", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        // Connections.
        (
            "three pipelined requests",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n",
            Same,
        ),
        ("leading CRLF", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        ("CRLF between requests", b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        ("a leading bare LF", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", head(H::Malformed("a line ends in a bare LF"))),
        (
            "Connection: close, then more",
            b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            Same,
        ),
        (
            "HTTP/1.0 keep-alive, then more",
            b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n",
            Same,
        ),
        ("a body cut short", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello", Same),
        ("a chunked body cut short", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", Same),
        ("a head cut short", b"GET / HTTP/1.1\r\nHost: a\r\n", Same),
        (
            "a second request refused after a good one",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            head(H::Host(HostError::Repeated)),
        ),
    ];
    // Every allowed difference is shown by a case here.
    for (why, _) in ALLOWED {
        assert!(cases.iter().any(|(_, _, o)| *o == Stricter(*why)), "no case shows {why:?}");
    }
    for (l, _, _) in LOOSER {
        assert!(cases.iter().any(|(_, _, o)| *o == Looser(*l)), "no case shows {l:?}");
    }
    let rt = runtime();
    let mut failures = Vec::new();
    for (name, input, want) in &cases {
        match rt.block_on(compare(input)) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!(
                "{name}: {got:?}, want {want:?}\n  input:   {}\n  patgate: {}\n  hyper:   {}",
                escape(input),
                show(&patgate_read(input)),
                show(&rt.block_on(hyper_read(input)))
            )),
            Err(u) => failures.push(format!("{name}: {u}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Generated streams.
// ---------------------------------------------------------------------------------------

/// One generated request's body, and how it is framed.
#[derive(Debug, Clone)]
enum Body {
    None,
    /// The bytes, and what `Content-Length` says less their length (-1, 0 or 1).
    Length(Vec<u8>, i8, &'static str),
    /// Chunks (data, size format, extension, size line end, data end), the last chunk's
    /// extension, trailers and the final line end; the `Transfer-Encoding` value; a
    /// `Content-Length` beside it.
    Chunked {
        chunks: Vec<(Vec<u8>, u8, &'static str, &'static str, &'static str)>,
        last: &'static str,
        trailers: Vec<&'static str>,
        end: &'static str,
        te: &'static str,
        with_length: bool,
    },
}

/// One of `good` most of the time (`odds` to 1), else one of `bad`.
fn pick(odds: u32, good: &[&'static str], bad: &[&'static str]) -> BoxedStrategy<&'static str> {
    prop_oneof![odds => prop::sample::select(good.to_vec()), 1 => prop::sample::select(bad.to_vec())].boxed()
}

fn line_end() -> BoxedStrategy<&'static str> {
    pick(30, &["\r\n"], &["\n"])
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n'), any::<u8>()], 1..12)
}

fn body() -> impl Strategy<Value = Body> {
    let length = (
        data(),
        prop_oneof![12 => Just(0i8), 1 => Just(-1), 1 => Just(1)],
        pick(8, &["{}", "{}", "0{}", " {} "], &["+{}", "{}, {}", "{}x"]),
    )
        .prop_map(|(d, delta, form)| Body::Length(d, delta, form));
    let chunk = (
        data(),
        0u8..4,
        pick(
            12,
            &["", "", "", ";a=b", ";a=\"b c\"", " ;x", ";a\tb"],
            &[";\x01", ";\x7f", "; \x00"],
        ),
        line_end(),
        pick(30, &["\r\n"], &["\n", "XY"]),
    );
    let chunked = (
        prop::collection::vec(chunk, 0..3),
        pick(12, &["", "", ";e"], &[";\x02"]),
        prop::collection::vec(
            pick(
                4,
                &["X-T: 1\r\n", "X-U:\r\n"],
                &["X-T: 1\n", "no colon\r\n", " folded\r\n", "X-V: a\x01\r\n"],
            ),
            0..2,
        ),
        line_end(),
        pick(
            8,
            &["chunked", "chunked", "Chunked"],
            &["chunked, chunked", "gzip, chunked", "chunked, gzip", "identity", "", ", chunked"],
        ),
        prop::bool::weighted(0.04),
    )
        .prop_map(|(chunks, last, trailers, end, te, with_length)| Body::Chunked {
            chunks,
            last,
            trailers,
            end,
            te,
            with_length,
        });
    prop_oneof![3 => Just(Body::None), 3 => length, 4 => chunked]
}

/// One request's bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "get"]);
    let target = pick(
        12,
        &["/", "/org/r.git/info/refs?service=git-upload-pack", "/a%20b", "http://h/x", "//x"],
        &["*", "/a b", "/\x7f"],
    );
    let version = pick(
        12,
        &["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"],
        &["HTTP/2.0", "HTTP/1.2", "HTTP/1.10"],
    );
    let host = pick(
        10,
        &[
            "Host: gate.example",
            "Host: gate.example:8080",
            "Host: [::1]",
            "Host:",
            "host: x.example",
        ],
        &["", "Host: a b", "Host: u@h", "Host: h:99999", "Host: a\r\nHost: b", "Host: [x]"],
    );
    let other = prop::collection::vec(
        pick(
            8,
            &[
                "X-A: v",
                "X-B: a\tb",
                "X-C:",
                "Connection: close",
                "Connection: keep-alive",
                "Expect: 100-continue",
                "X-E: caf\u{e9}",
            ],
            &[
                "Expect: fancy",
                "X-D : v",
                "Bad Name: v",
                " folded",
                "Content-Length: 0",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding:",
            ],
        ),
        0..3,
    );
    (method, target, version, host, other, body(), line_end(), line_end()).prop_map(
        |(method, target, version, host, other, body, eol, blank)| {
            let mut lines: Vec<String> = Vec::new();
            if !host.is_empty() {
                lines.push(host.to_owned());
            }
            lines.extend(other.iter().map(|s| (*s).to_owned()));
            let mut tail = Vec::new();
            match &body {
                Body::None => {}
                Body::Length(d, delta, form) => {
                    let n = (d.len() as i64 + i64::from(*delta)).max(0).to_string();
                    lines.push(format!("Content-Length: {}", form.replace("{}", &n)));
                    tail.extend_from_slice(d);
                }
                Body::Chunked {
                    chunks,
                    last,
                    trailers,
                    end,
                    te,
                    with_length,
                } => {
                    lines.push(format!("Transfer-Encoding: {te}"));
                    if *with_length {
                        lines.push("Content-Length: 3".into());
                    }
                    for (d, form, ext, size_end, data_end) in chunks {
                        let size = match form {
                            0 => format!("{:x}", d.len()),
                            1 => format!("{:X}", d.len()),
                            2 => format!("000{:x}", d.len()),
                            _ => format!("{:x} ", d.len()),
                        };
                        tail.extend_from_slice(format!("{size}{ext}{size_end}").as_bytes());
                        tail.extend_from_slice(d);
                        tail.extend_from_slice(data_end.as_bytes());
                    }
                    tail.extend_from_slice(format!("0{last}\r\n").as_bytes());
                    for t in trailers {
                        tail.extend_from_slice(t.as_bytes());
                    }
                    tail.extend_from_slice(end.as_bytes());
                }
            }
            let mut out = format!("{method} {target} {version}{eol}").into_bytes();
            for l in &lines {
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(blank.as_bytes());
            out.extend_from_slice(&tail);
            out
        },
    )
}

/// A connection's bytes: perhaps a leading empty line, one to three requests, perhaps cut
/// short, perhaps with one byte changed.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::bool::weighted(0.1),
        prop::collection::vec(request(), 1..4),
        prop_oneof![5 => Just(None), 1 => (0.0f64..1.0).prop_map(Some)],
        prop_oneof![7 => Just(None), 1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(Some)],
    )
        .prop_map(|(leading, requests, cut, change)| {
            let mut s = if leading { b"\r\n".to_vec() } else { Vec::new() };
            for r in requests {
                s.extend_from_slice(&r);
            }
            if let Some(at) = cut {
                s.truncate((s.len() as f64 * at) as usize);
            }
            if let (Some((i, b)), false) = (change, s.is_empty()) {
                let i = i.index(s.len());
                s[i] = b;
            }
            s
        })
}

/// How many generated streams are read both ways; `DIFFERENTIAL_CASES` sets another
/// number, and `DIFFERENTIAL_SEED` (a number) another seed, for a longer search.
const CASES: u32 = 2000;

#[test]
fn generated_streams() {
    let rt = runtime();
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("DIFFERENTIAL_CASES").map_or(CASES, |n| n as u32);
    let rng = match env("DIFFERENTIAL_SEED") {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let counts: Mutex<std::collections::BTreeMap<String, u32>> = Mutex::default();
    let result = runner.run(&stream(), |input| match rt.block_on(compare(&input)) {
        Ok(outcome) => {
            let read = patgate_read(&input).requests.len();
            let key = match outcome {
                Outcome::Same if read > 0 => format!("Same, {read} requests read"),
                Outcome::Same => format!("Same, none read, {:?}", patgate_read(&input).refused),
                o => format!("{o:?}"),
            };
            *counts.lock().unwrap().entry(key).or_default() += 1;
            Ok(())
        }
        Err(u) => Err(TestCaseError::fail(u.to_string())),
    });
    eprintln!("outcomes of {cases} generated streams: {:#?}", counts.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}");
    }
    let counts = counts.lock().unwrap();
    // The generator reaches requests read alike, and refusals of many kinds.
    let alike: u32 = counts.iter().filter(|(k, _)| k.starts_with("Same, ")).map(|(_, n)| n).sum();
    assert!(alike > cases / 10, "{counts:?}");
    assert!(counts.len() > 8, "{counts:?}");
}
