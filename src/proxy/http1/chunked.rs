//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded strictly:
//! a size of 1 to 16 hex digits; blanks, then extensions after `;` of visible text only;
//! CRLF and nothing else ending every line, and after every chunk's data; trailer lines
//! that are field lines (`name: value`), bounded in all; an empty line at the end.
//! Anything else is [`ChunkError`], and the connection's framing is lost with it.
//!
//! Pure: bytes in, the data's place out; never copies. Fuzzed (`fuzz/fuzz_targets/http1_chunked.rs`)
//! and tested against hyper's decoder (`tests/it/differential.rs`).

use std::ops::Range;

/// The longest chunk-size line past its digits (blanks and extensions).
pub const MAX_EXTENSION: usize = 4096;
/// The most bytes of trailer lines, all told.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The most hex digits of a chunk size (leading zeros count).
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a chunk size is not 1 to 16 hex digits")]
    Size,
    #[error("a chunk extension holds a byte that is not visible text, or is too long")]
    Extension,
    #[error("a chunk line or chunk data does not end with CRLF")]
    LineEnd,
    #[error("a trailer is not a field line, or the trailers are too long")]
    Trailer,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first byte of a chunk-size line (a hex digit).
    Start,
    /// In the size: its value and how many digits so far.
    Size(u64, u8),
    /// Blanks after the size.
    Blank(u64),
    /// In the extensions: how long so far.
    Ext(u64, usize),
    /// The LF that ends a size line.
    SizeLf(u64),
    /// Chunk data: bytes left.
    Data(u64),
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// The start of a trailer line, or the empty line that ends the body.
    Line,
    /// In a trailer's name; in its value.
    Name,
    Value,
    /// The LF that ends a trailer line.
    TrailerLf,
    /// The LF of the empty line that ends the body.
    EndLf,
    Done,
    Failed(ChunkError),
}

/// A chunked body being decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    trailers: usize,
}

/// What [`Decoder::decode`] found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How many of the bytes it used.
    pub used: usize,
    /// Where, among those, the next piece of data lies.
    pub data: Option<Range<usize>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A body not yet begun.
    pub fn new() -> Decoder {
        Decoder {
            state: State::Start,
            trailers: 0,
        }
    }

    /// Whether the body ended (the empty line after the last chunk was read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The error, once the body turned out not to be chunked.
    pub fn error(&self) -> Option<ChunkError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Reads `bytes`, the body's next, up to the end of the next piece of data, the end of
    /// the body, or an error (then [`Decoder::error`] says which); no byte after the body's
    /// end is used.
    pub fn decode(&mut self, bytes: &[u8]) -> Step {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Done | State::Failed(_) => break,
                State::Data(left) => {
                    let n = ((bytes.len() - at) as u64).min(left);
                    self.state = if left == n { State::DataCr } else { State::Data(left - n) };
                    let end = at + n as usize;
                    return Step {
                        used: end,
                        data: Some(at..end),
                    };
                }
                _ => {}
            }
            self.state = self.step(bytes[at]);
            at += 1;
        }
        Step { used: at, data: None }
    }

    fn step(&mut self, b: u8) -> State {
        use State::*;
        let fail = |e| Failed(e);
        let hex = (b as char).to_digit(16).map(u64::from);
        // Visible text and blanks: no control byte, no DEL.
        let text = b == b'\t' || (b >= b' ' && b != 0x7f);
        if matches!(self.state, Line | Name | Value | TrailerLf | EndLf) {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return fail(ChunkError::Trailer);
            }
        }
        match (self.state, b) {
            (Start, _) => match hex {
                Some(d) => Size(d, 1),
                None => fail(ChunkError::Size),
            },
            (Size(size, n), _) if hex.is_some() => match n < MAX_SIZE_DIGITS {
                true => Size(size << 4 | hex.unwrap_or(0), n + 1),
                false => fail(ChunkError::Size),
            },
            (Size(size, _) | Blank(size), b' ' | b'\t') => Blank(size),
            (Size(size, _) | Blank(size), b';') => Ext(size, 0),
            (Size(size, _) | Blank(size) | Ext(size, _), b'\r') => SizeLf(size),
            (Size(..) | Blank(_), b'\n') => fail(ChunkError::LineEnd),
            (Size(..) | Blank(_), _) => fail(ChunkError::Size),
            (Ext(size, len), _) if text && len < MAX_EXTENSION => Ext(size, len + 1),
            (Ext(..), _) => fail(ChunkError::Extension),
            (SizeLf(0), b'\n') => Line,
            (SizeLf(size), b'\n') => Data(size),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (SizeLf(_) | DataCr | DataLf, _) => fail(ChunkError::LineEnd),
            (Line, b'\r') => EndLf,
            (Line, b'\n') => fail(ChunkError::LineEnd),
            (Line | Name, _) if tchar(b) => Name,
            (Name, b':') => Value,
            (Value, b'\r') => TrailerLf,
            (Value, _) if text => Value,
            (TrailerLf, b'\n') => Line,
            (EndLf, b'\n') => Done,
            (TrailerLf | EndLf, _) => fail(ChunkError::LineEnd),
            (Line | Name | Value, _) => fail(ChunkError::Trailer),
            (Data(_) | Done | Failed(_), _) => self.state,
        }
    }
}

/// A byte of a token (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data and what the decoder says of `body`, fed `split` bytes at a time.
    fn decode(body: &[u8], split: usize) -> (Vec<u8>, Result<usize, ChunkError>) {
        let mut d = Decoder::new();
        let mut data = Vec::new();
        let mut at = 0;
        while at < body.len() && !d.is_done() && d.error().is_none() {
            let end = (at + split).min(body.len());
            let step = d.decode(&body[at..end]);
            if let Some(r) = step.data {
                data.extend_from_slice(&body[at + r.start..at + r.end]);
            }
            at += step.used;
        }
        match d.error() {
            Some(e) => (data, Err(e)),
            None => {
                assert!(d.is_done(), "a body of {} bytes did not end", body.len());
                (data, Ok(at))
            }
        }
    }

    #[test]
    fn well_formed_bodies_decode_on_any_split() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;name=value\r\nhello\r\n6 ; a=\"b c\"\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n", b"0123456789"),
            (b"000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n", b"0123456789abcde"),
        ];
        for (body, want) in cases {
            for split in 1..=body.len() {
                let (data, end) = decode(body, split);
                assert_eq!((&data[..], end), (*want, Ok(body.len())), "{body:?} split {split}");
            }
        }
        // Nothing past the end is used: the next request is the connection's.
        let mut d = Decoder::new();
        assert_eq!(d.decode(b"0\r\n\r\nGET / HTTP/1.1\r\n").used, 5);
    }

    #[test]
    fn anything_else_is_refused() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"5;\x01\r\nhello\r\n0\r\n\r\n", ChunkError::Extension),
            (b"5;\x00\r\nhello\r\n0\r\n\r\n", ChunkError::Extension),
            (b"5;a\x7fb\r\nhello\r\n0\r\n\r\n", ChunkError::Extension),
            (b"5;a\nhello\r\n0\r\n\r\n", ChunkError::Extension),
            (b"0\r\nX-T: 1\n\r\n", ChunkError::Trailer),
            (b"0\r\nHost: evil\n\r\n", ChunkError::Trailer),
            (b"0\r\n\n", ChunkError::LineEnd),
            (b"0\n\r\n", ChunkError::LineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::LineEnd),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkError::LineEnd),
            (b"x\r\n", ChunkError::Size),
            (b"-1\r\n", ChunkError::Size),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
            (b"0x5\r\nhello\r\n", ChunkError::Size),
            (b"00000000000000001\r\nx\r\n0\r\n\r\n", ChunkError::Size),
            (b"FFFFFFFFFFFFFFFFF\r\n", ChunkError::Size),
            (b"5 5\r\nhello\r\n", ChunkError::Size),
            (b"0\r\nno colon\r\n\r\n", ChunkError::Trailer),
            (b"0\r\n: empty name\r\n\r\n", ChunkError::Trailer),
            (b"0\r\n X: folded\r\n\r\n", ChunkError::Trailer),
            (b"0\r\nX: a\x00b\r\n\r\n", ChunkError::Trailer),
        ];
        for (body, want) in cases {
            for split in [1, 2, 3, body.len()] {
                assert_eq!(decode(body, split).1, Err(*want), "{body:?} split {split}");
            }
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_EXTENSION + 1], b"\r\n"].concat();
        assert_eq!(decode(&long_ext, 1000).1, Err(ChunkError::Extension));
        let mut many = b"0\r\n".to_vec();
        while many.len() <= MAX_TRAILERS {
            many.extend_from_slice(b"X-A: 0123456789\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(decode(&many, 4096).1, Err(ChunkError::Trailer));
    }
}
