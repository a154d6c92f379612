//! The chunked body decoder (`patgate::proxy::http1::chunked`): however a body is split
//! across reads, it gives the same data and the same verdict (ended after the same byte,
//! refused at the same byte for the same reason, or not ended yet); each step uses no more
//! than it was given, makes progress until the end or an error, and its data lies within
//! the bytes it used and ends where they end (the server takes the data and then goes on
//! from `used`).
//!
//! Input: one control byte `k`, then `k % 8` piece sizes (each byte + 1), then the body.
//! The body is fed whole, a byte at a time, and in pieces of those sizes in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patgate::proxy::http1::chunked::{ChunkError, Decoder};

/// How a body ended: after how many bytes, and how.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done(usize),
    Failed(usize, ChunkError),
    /// All bytes used, and more are awaited.
    Open(usize),
}

/// Feeds `body` to a decoder in pieces of the sizes `sizes` gives in turn (as a connection
/// would: the unused rest of a piece is given again with the next piece).
fn decode(body: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<u8>, Verdict) {
    let mut d = Decoder::new();
    let mut data = Vec::new();
    // What has arrived: `body[at..arrived]` is buffered and not yet used.
    let (mut at, mut arrived) = (0, 0);
    loop {
        if let Some(e) = d.error() {
            return (data, Verdict::Failed(at, e));
        }
        if d.is_done() {
            // A done decoder uses nothing more.
            let step = d.decode(&body[at..]);
            assert_eq!((step.used, step.data), (0, None), "a finished decoder used more bytes");
            return (data, Verdict::Done(at));
        }
        if at == arrived {
            if arrived == body.len() {
                return (data, Verdict::Open(at));
            }
            arrived = (arrived + sizes().max(1)).min(body.len());
        }
        let buf = &body[at..arrived];
        let step = d.decode(buf);
        assert!(step.used <= buf.len(), "used {} of {} bytes", step.used, buf.len());
        assert!(
            step.used > 0 || d.is_done() || d.error().is_some(),
            "no progress on {} bytes with the body not ended",
            buf.len()
        );
        if let Some(r) = &step.data {
            assert!(r.start < r.end && r.end <= step.used, "data {r:?} of {} used bytes", step.used);
            assert_eq!(r.end, step.used, "bytes used past the data of a step");
            assert!(d.error().is_none(), "data together with an error");
            data.extend_from_slice(&buf[r.clone()]);
        }
        at += step.used;
        if d.error().is_some() {
            assert!(step.data.is_none());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else { return };
    let n = usize::from(k % 8).min(rest.len());
    let (sizes, body) = rest.split_at(n);

    let whole = decode(body, || body.len());
    let bytewise = decode(body, || 1);
    assert_eq!(whole, bytewise, "whole and a byte at a time differ");
    if !sizes.is_empty() {
        let mut i = 0;
        let pieces = decode(body, || {
            i += 1;
            usize::from(sizes[(i - 1) % sizes.len()]) + 1
        });
        assert_eq!(whole, pieces, "whole and in pieces of {sizes:?} differ");
    }

    let (data, verdict) = whole;
    let used = match verdict {
        Verdict::Done(n) | Verdict::Failed(n, _) | Verdict::Open(n) => n,
    };
    assert!(
        used <= body.len() && data.len() < used.max(1),
        "{} data bytes from {used} used",
        data.len()
    );
    if let Verdict::Done(n) = verdict {
        assert!(body[..n].ends_with(b"\n\r\n"), "ended without an empty line");
        // The body as read, given alone, decodes the same.
        assert_eq!(decode(&body[..n], || n), (data, Verdict::Done(n)));
    }
});
