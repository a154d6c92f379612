//! patgate's reader of upstream answers against hyper's HTTP/1 client, on the same bytes.
//!
//! Each input is what an upstream sends back for one request (a `GET`, or a `HEAD`): perhaps
//! interim `1xx` heads, the answer's head, its body, perhaps cut short or followed by more,
//! then the end of the connection. patgate's side reads it as its client does
//! ([`answer::parse_final`], then [`BodyReader`] until the body ends, or until the bytes run
//! out: the end of the connection, which ends a body only when its framing says so). hyper's
//! side is hyper's client (`hyper::client::conn::http1`) over `tokio::io::duplex`: it sends
//! the request, then reads the answer and all of its body.
//!
//! The two must agree on the status and the body's bytes, or both refuse the answer (its
//! head, or its body), except where patgate is stricter on purpose: each such difference is
//! classified by patgate's reason and must be one of [`ALLOWED`]. Never an answer that both
//! read but read differently, and never one that hyper refuses and patgate reads.
//!
//! Inputs: a hand-written table ([`table_of_tricky_answers`]) and generated answers
//! (proptest, a fixed seed, a bounded number of cases: [`generated_answers`]).

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use patgate::proxy::http1::chunked::ChunkError;
use patgate::proxy::upstream::answer::{self, AnswerError, BodyReader, Piece};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The differences allowed, each keyed by patgate's reason: patgate refuses, for that
/// reason, what hyper reads, and why patgate is right to.
const ALLOWED: &[(Why, &str)] = &[
    (
        Why::Chunk(ChunkError::Extension),
        "patgate refuses a chunk extension with a control byte or DEL; hyper skips extensions unread. The answer's bytes before it still reach the client, then its connection closes.",
    ),
    (
        Why::Chunk(ChunkError::Trailer),
        "patgate refuses a trailer line that is not a field line or ends in a bare LF; hyper reads on to the next CR LF CR LF.",
    ),
    (
        Why::Chunk(ChunkError::Size),
        "patgate refuses a chunk size of more than 16 hex digits, leading zeros counted; hyper only one over 64 bits.",
    ),
];

/// Why patgate's side stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Head(AnswerError),
    Chunk(ChunkError),
    /// The connection ended inside the body.
    Short,
    /// A `101` to a request that asked for no upgrade.
    Switched,
}

/// What one side read: the head refused, or the status and the body (or why not all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got<W> {
    Refused(W),
    Answer { status: u16, body: Result<Vec<u8>, W> },
}

const MAX_HEAD: usize = 16 * 1024;

/// patgate's reader, as its client runs it.
fn patgate_read(input: &[u8], to_head: bool) -> Got<Why> {
    let (len, head) = match answer::parse_final(input, MAX_HEAD, to_head) {
        Ok(Some(found)) => found,
        Ok(None) => return Got::Refused(Why::Head(AnswerError::Malformed("the connection ended in the head"))),
        Err(e) => return Got::Refused(Why::Head(e)),
    };
    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return Got::Refused(Why::Switched);
    }
    let status = head.status.as_u16();
    let Some(mut reader) = BodyReader::of(head.framing) else {
        return Got::Answer {
            status,
            body: Ok(Vec::new()),
        };
    };
    let mut buf = BytesMut::from(&input[len..]);
    let mut body = Vec::new();
    loop {
        match reader.next(&mut buf) {
            Piece::Data(d) => body.extend_from_slice(&d),
            Piece::End => return Got::Answer { status, body: Ok(body) },
            Piece::Failed(e) => {
                return Got::Answer {
                    status,
                    body: Err(Why::Chunk(e)),
                }
            }
            Piece::More if reader.ends_at_close() => return Got::Answer { status, body: Ok(body) },
            Piece::More => {
                return Got::Answer {
                    status,
                    body: Err(Why::Short),
                }
            }
        }
    }
}

/// hyper's client, over a duplex stream whose far end reads the request and sends `input`.
async fn hyper_read(input: &[u8], to_head: bool) -> Got<String> {
    let (near, mut far) = tokio::io::duplex(input.len() + 64 * 1024);
    let answer = input.to_vec();
    let upstream = tokio::spawn(async move {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match far.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let _ = far.write_all(&answer).await;
        let _ = far.shutdown().await;
        // Kept until hyper is done, so that only the answer's end is seen.
        let _ = far.read_to_end(&mut req).await;
    });
    let read = async {
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(near)).await {
            Ok(h) => h,
            Err(e) => return Got::Refused(format!("handshake: {e}")),
        };
        let driver = tokio::spawn(conn);
        let method = if to_head { http::Method::HEAD } else { http::Method::GET };
        let req = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "upstream")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let got = match sender.send_request(req).await {
            Err(e) => Got::Refused(chain(&e)),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = match response.into_body().collect().await {
                    Ok(b) => Ok(b.to_bytes().to_vec()),
                    Err(e) => Err(chain(&e)),
                };
                Got::Answer { status, body }
            }
        };
        driver.abort();
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("hyper did not finish reading {}", escape(input)));
    upstream.abort();
    got
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn escape(bytes: &[u8]) -> String {
    let s: String = bytes.escape_ascii().to_string();
    match s.char_indices().nth(600) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// How the two readings of an input compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both read the same answer, or both refused it.
    Same,
    /// patgate refused, for this listed reason, what hyper read.
    Stricter(Why),
}

/// An input the two read differently, in a way not listed.
struct Unlisted {
    input: Vec<u8>,
    to_head: bool,
    patgate: Got<Why>,
    hyper: Got<String>,
    what: &'static str,
}

impl fmt::Debug for Unlisted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n  answer to {}: {}\n  patgate: {:?}\n  hyper:   {:?}",
            self.what,
            if self.to_head { "HEAD" } else { "GET" },
            escape(&self.input),
            self.patgate,
            self.hyper
        )
    }
}

fn allowed(why: &Why) -> Option<Outcome> {
    ALLOWED.iter().any(|(w, _)| w == why).then_some(Outcome::Stricter(*why))
}

async fn compare(input: &[u8], to_head: bool) -> Result<Outcome, Box<Unlisted>> {
    let patgate = patgate_read(input, to_head);
    let hyper = hyper_read(input, to_head).await;
    let verdict = match (&patgate, &hyper) {
        (Got::Refused(_), Got::Refused(_)) => Ok(Outcome::Same),
        (Got::Refused(why), Got::Answer { .. }) => allowed(why).ok_or("patgate refuses the head, hyper reads it"),
        (Got::Answer { .. }, Got::Refused(_)) => Err("hyper refuses the head, patgate reads it"),
        (Got::Answer { status: a, body: x }, Got::Answer { status: b, body: y }) if a == b => match (x, y) {
            (Ok(x), Ok(y)) if x == y => Ok(Outcome::Same),
            (Ok(_), Ok(_)) => Err("the two read different bodies"),
            (Err(_), Err(_)) => Ok(Outcome::Same),
            (Err(why), Ok(_)) => allowed(why).ok_or("patgate refuses the body, hyper reads it"),
            (Ok(_), Err(_)) => Err("hyper refuses the body, patgate reads it"),
        },
        (Got::Answer { .. }, Got::Answer { .. }) => Err("the two read different statuses"),
    };
    verdict.map_err(|what| {
        Box::new(Unlisted {
            input: input.to_vec(),
            to_head,
            patgate,
            hyper,
            what,
        })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Hand-written answers, each with the outcome it must have.
#[test]
fn table_of_tricky_answers() {
    use Outcome::*;
    let cases: &[(&str, bool, Outcome)] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, Same),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false, Same),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more", false, Same),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", false, Same),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            false,
            Same,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", false, Same),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, Same),
        ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, Same),
        ("HTTP/1.1 304 Not Modified\r\n\r\n", false, Same),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
            false,
            Same,
        ),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", false, Same),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
            Same,
        ),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nall of it", false, Same),
        ("HTTP/1.1 200 OK\r\n\r\nuntil the end", false, Same),
        ("HTTP/1.0 200 OK\r\n\r\nuntil the end", false, Same),
        ("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false, Same),
        (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            Same,
        ),
        (
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
            Same,
        ),
        ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", false, Same),
        ("HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 2\r\n\r\nok", false, Same),
        ("HTTP/2 200 OK\r\n\r\n", false, Same),
        ("HTTP/1.1 2000 OK\r\n\r\n", false, Same),
        ("HTTP/1.1 099 Low\r\n\r\n", false, Same),
        ("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", false, Same),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false, Same),
        ("", false, Same),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n",
            false,
            Stricter(Why::Chunk(ChunkError::Extension)),
        ),
        // hyper reads on to a CR LF CR LF that never comes.
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\n\r\nX-U: 2\r\n\r\n",
            false,
            Stricter(Why::Chunk(ChunkError::Trailer)),
        ),
        ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, Same),
        // Both refuse a bare LF for the last line (hyper's server side takes it).
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
            false,
            Same,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n",
            false,
            Stricter(Why::Chunk(ChunkError::Size)),
        ),
    ];
    let rt = runtime();
    for (input, to_head, want) in cases {
        match rt.block_on(compare(input.as_bytes(), *to_head)) {
            Ok(got) => assert_eq!(got, *want, "{}", escape(input.as_bytes())),
            Err(unlisted) => panic!("{unlisted:?}"),
        }
    }
}

fn pick(odds: u32, good: &[&'static str], bad: &[&'static str]) -> BoxedStrategy<&'static str> {
    prop_oneof![odds => prop::sample::select(good.to_vec()), 1 => prop::sample::select(bad.to_vec())].boxed()
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n'), any::<u8>()], 1..12)
}

/// One answer's bytes, and whether it answers a `HEAD`.
fn answer_stream() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let interim = pick(
        8,
        &["", "", "HTTP/1.1 100 Continue\r\n\r\n"],
        &["HTTP/1.1 102 Processing\r\nX: y\r\n\r\n"],
    );
    let status = pick(
        8,
        &["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.0 200 OK"],
        &[
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 200",
            "HTTP/1.2 200 OK",
            "HTTP/1.1 20 OK",
        ],
    );
    let end = pick(30, &["\r\n"], &["\n"]);
    let extra = prop::collection::vec(
        pick(
            4,
            &["X-A: 1", "Connection: close", "Connection: keep-alive"],
            &["X-B:\x01", "X C: d", " folded"],
        ),
        0..2,
    );
    let chunk = (
        data(),
        pick(12, &["", "", ";a=b", " ;x"], &[";\x01", ";\x7f"]),
        pick(30, &["\r\n"], &["\n"]),
        pick(30, &["\r\n"], &["\n", "XY"]),
    );
    let body = prop_oneof![
        3 => (data(), pick(8, &["{}", "{}", "{}, {}", "0{}"], &["+{}", "{}x", " "]), prop_oneof![8 => Just(0i8), 1 => Just(-1), 1 => Just(1)])
            .prop_map(|(d, form, delta)| {
                let n = (d.len() as i64 + i64::from(delta)).max(0);
                let value = form.replace("{}", &n.to_string());
                (format!("Content-Length: {value}"), d)
            }),
        4 => (
            prop::collection::vec(chunk, 0..3),
            prop::collection::vec(pick(4, &["X-T: 1\r\n"], &["X-T: 1\n", "no colon\r\n"]), 0..2),
            pick(30, &["\r\n"], &["\n"]),
            pick(8, &["chunked", "Chunked", "gzip, chunked"], &["chunked, gzip", "identity"]),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(chunks, trailers, last_end, te, with_length, cut)| {
                let mut b = Vec::new();
                for (d, ext, size_end, data_end) in chunks {
                    b.extend_from_slice(format!("{:x}{ext}{size_end}", d.len()).as_bytes());
                    b.extend_from_slice(&d);
                    b.extend_from_slice(data_end.as_bytes());
                }
                b.extend_from_slice(b"0\r\n");
                for t in trailers {
                    b.extend_from_slice(t.as_bytes());
                }
                b.extend_from_slice(last_end.as_bytes());
                if cut {
                    b.truncate(b.len() / 2);
                }
                let mut head = format!("Transfer-Encoding: {te}");
                if with_length {
                    head.push_str("\r\nContent-Length: 3");
                }
                (head, b)
            }),
        1 => data().prop_map(|d| (String::new(), d)),
    ];
    (
        interim,
        status,
        end,
        extra,
        body,
        prop::bool::weighted(0.1),
        data(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(interim, status, end, extra, (framing, body), to_head, trailing, more)| {
            let mut s = interim.as_bytes().to_vec();
            s.extend_from_slice(status.as_bytes());
            s.extend_from_slice(end.as_bytes());
            for h in extra.iter().copied().chain((!framing.is_empty()).then_some(framing.as_str())) {
                s.extend_from_slice(h.as_bytes());
                s.extend_from_slice(end.as_bytes());
            }
            s.extend_from_slice(end.as_bytes());
            s.extend_from_slice(&body);
            if more {
                s.extend_from_slice(&trailing);
            }
            (s, to_head)
        })
}

/// Generated answers, from a fixed seed: the same cases every run.
#[test]
fn generated_answers() {
    let rt = runtime();
    let cases = std::env::var("PATGATE_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let counts: std::sync::Mutex<std::collections::BTreeMap<String, u32>> = Default::default();
    let result = runner.run(&answer_stream(), |(input, to_head)| match rt.block_on(compare(&input, to_head)) {
        Ok(outcome) => {
            let key = match (outcome, patgate_read(&input, to_head)) {
                (Outcome::Stricter(why), _) => format!("patgate stricter: {why:?}"),
                (_, Got::Refused(_)) => "both refuse the head".to_string(),
                (_, Got::Answer { body: Err(_), .. }) => "both refuse the body".to_string(),
                (_, Got::Answer { .. }) => "both read the same answer".to_string(),
            };
            *counts.lock().unwrap().entry(key).or_default() += 1;
            Ok(())
        }
        Err(unlisted) => Err(TestCaseError::fail(format!("{unlisted:?}"))),
    });
    let counts = counts.into_inner().unwrap();
    eprintln!("{cases} generated answers: {counts:#?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches every kind of outcome.
    for kind in ["both read the same answer", "both refuse the head", "both refuse the body"] {
        assert!(counts.contains_key(kind), "no generated answer was {kind}: {counts:?}");
    }
}
