//! Text made fit to show in an answer and to log: secrets masked, one honest line, and a
//! bounded length. A leaf: the request readers and the error answers both use it.

/// `text` with every secret masked, so that no message or log line echoes one: each
/// `patg_` run (any case, also percent-encoded, as in a URL) and each base64 run that
/// decodes to text holding one (a Basic credential, say). Masking twice changes nothing.
pub fn redact(text: &str) -> String {
    mask_prefixed(&mask_base64(text))
}

/// What replaces a masked secret.
const MASK: &str = "<redacted>";

/// `text` with each run of base64 characters that decodes (at any alignment) to bytes
/// holding `patg_` replaced by [`MASK`].
fn mask_base64(text: &str) -> String {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_');
    // The shortest base64 of `patg_` plus a few characters.
    const SHORTEST: usize = 8;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_b64) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..].find(|c: char| !is_b64(c)).unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        let mut end = start + run_len;
        // Padding belongs to the run.
        end += rest[end..].len() - rest[end..].trim_start_matches('=').len();
        let holds_secret = run.len() >= SHORTEST
            && (0..4).any(|skip| {
                // URL-safe characters read as their standard twins; a partial last quantum is dropped.
                let body: String = run[skip.min(run.len())..]
                    .chars()
                    .map(|c| match c {
                        '-' => '+',
                        '_' => '/',
                        c => c,
                    })
                    .collect();
                let whole = body.len() - body.len() % 4;
                LENIENT.decode(&body[..whole]).is_ok_and(|bytes| {
                    bytes
                        .windows(PREFIX_LEN)
                        .any(|w| w.eq_ignore_ascii_case(crate::auth::token::PREFIX.as_bytes()))
                })
            });
        if holds_secret {
            out.push_str(MASK);
        } else {
            out.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

const PREFIX_LEN: usize = crate::auth::token::PREFIX.len();

/// Reads one character at the start of `text`, literal or percent-encoded: the byte and
/// how many characters of `text` it took.
fn char_at(text: &[u8]) -> Option<(u8, usize)> {
    match text {
        [b'%', h, l, ..] => {
            let hex = |b: u8| (b as char).to_digit(16);
            Some(((hex(*h)? * 16 + hex(*l)?) as u8, 3))
        }
        [b, ..] => Some((*b, 1)),
        [] => None,
    }
}

/// `text` with each `patg_` (any case, literal or percent-encoded) and the alphanumerics
/// after it replaced by `patg_<redacted>`. A bare `patg_` holds no secret and stays.
fn mask_prefixed(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Match the prefix, each character literal or percent-encoded.
        let mut j = i;
        let mut matched = true;
        for want in crate::auth::token::PREFIX.bytes() {
            match char_at(&bytes[j..]) {
                Some((b, n)) if b.eq_ignore_ascii_case(&want) => j += n,
                _ => {
                    matched = false;
                    break;
                }
            }
        }
        if !matched {
            i += 1;
            continue;
        }
        let mut k = j;
        while let Some((_, n)) = char_at(&bytes[k..]).filter(|(b, _)| b.is_ascii_alphanumeric()) {
            k += n;
        }
        if k > j {
            // i, j and k sit on ASCII bytes, hence on character boundaries.
            out.push_str(&text[copied..i]);
            out.push_str(crate::auth::token::PREFIX);
            out.push_str(MASK);
            copied = k;
        }
        i = k.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// The longest message or logged value, in characters; the rest is cut.
pub const MAX_SHOWN: usize = 300;

/// `text` made fit to show and log: secrets masked ([`redact`]), control, line-breaking
/// and text-direction characters escaped so that it stays one honest line, and cut at
/// [`MAX_SHOWN`] characters.
pub fn clean(text: &str) -> String {
    let masked = redact(text);
    let mut out = String::with_capacity(masked.len().min(MAX_SHOWN + 8));
    for (n, c) in masked.chars().enumerate() {
        if n == MAX_SHOWN {
            out.push('…');
            break;
        }
        let invisible = matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
