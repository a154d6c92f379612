//! Reading admin requests: the JSON body (bounded, typed, errors that name the field), the
//! query string (known parameters only, each at most once), and the two ways to say when
//! a token expires. Nothing here touches the store.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::AdminError;
pub use super::shown::{clean, redact, MAX_SHOWN};
use super::AdminState;

/// A request body, read up to `[admin] max_body_bytes` (413 beyond) and within
/// `[server] header_read_timeout` (408 after), not yet parsed: handlers check the caller's
/// scope before they look at it.
pub struct Body {
    bytes: Bytes,
    json: bool,
}

impl FromRequest<AdminState> for Body {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, AdminError> {
        let limit = state.config().max_body_bytes;
        let json = is_json(req.headers());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(AdminError::TooLarge { limit });
        }
        // A client that sends its body slowly would hold a connection slot forever.
        let within = state.config().header_read_timeout;
        let read = tokio::time::timeout(within, Limited::new(req.into_body(), limit).collect());
        let bytes = read
            .await
            .map_err(|_| AdminError::BodyTimeout { within })?
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    AdminError::TooLarge { limit }
                } else {
                    AdminError::BodyUnreadable
                }
            })?
            .to_bytes();
        Ok(Body { bytes, json })
    }
}

impl Body {
    /// The body as `T`: 415 unless it says it is JSON, 400 naming the field otherwise.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, AdminError> {
        if !self.json {
            return Err(AdminError::NotJson);
        }
        parse_json(&self.bytes)
    }

    /// As [`Body::parse`], or `T`'s default for an empty body (any content type): for
    /// endpoints whose body is optional.
    pub fn parse_or_empty<T: DeserializeOwned + Default>(&self) -> Result<T, AdminError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        self.parse()
    }
}

/// Parses a JSON object into `T`. A field that is unknown, missing or of the wrong type is
/// named (with its path, e.g. `scopes[1]`); anything shaped like a token is masked. Every
/// body of the API is an object: an array is refused here, where serde would read one
/// into a struct by position (`[["patg_..."]]` as a leak report, say).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(AdminError::BadJson("the body must be a JSON object, not an array".into()));
    }
    axum::Json::<T>::from_bytes(bytes).map(|axum::Json(v)| v).map_err(|rejection| {
        // The text is "<what failed>: <path>: <serde's reason>"; keep what follows the first part.
        let text = rejection.body_text();
        let detail = redact(text.split_once(": ").map_or(text.as_str(), |(_, d)| d));
        if rejection.status() == http::StatusCode::BAD_REQUEST {
            AdminError::MalformedJson(detail)
        } else {
            AdminError::BadJson(detail)
        }
    })
}

/// For a member that may be left out but not sent as null, with `#[serde(default,
/// deserialize_with = "request::not_null")]`: leaving it out is `None`, `null` is a 400
/// that names it. None of the optional members of the admin API has a meaning for null (in
/// a merge patch it would ask to remove the member, which none allows), so refusing it
/// keeps the server and the document's `type` one reading.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("may not be null; leave it out instead")),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .split_once('/')
            .is_some_and(|(t, sub)| t.eq_ignore_ascii_case("application") && sub.to_ascii_lowercase().ends_with("+json"))
}

/// Checks a token id from a path before it reaches the store: ids are ASCII letters and
/// digits, so anything else (a NUL, a 5 kB string) is a token that does not exist.
pub fn token_id(id: &str) -> Result<&str, AdminError> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(crate::store::StoreError::NotFound(id.to_owned()).into())
    }
}

/// Checks an owner name from a path or a query before it reaches the store, as the store
/// checks a new token's owner: 1 to 200 characters, no control characters, no space at
/// either end.
pub fn owner(name: &str) -> Result<&str, AdminError> {
    if crate::store::is_label(name) {
        Ok(name)
    } else {
        Err(crate::store::StoreError::Invalid(crate::store::InvalidToken::Owner).into())
    }
}

/// The one segment a route captures (`{id}`, `{owner}`), percent-decoded.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        let Path(v) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AdminError::field("path", redact(e.body_text().split_once(": ").map_or("", |(_, d)| d))))?;
        Ok(Segment(v))
    }
}

/// The query string as name-value pairs; [`Params::take`] each known one, then
/// [`Params::done`] refuses the rest.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| AdminError::field("query", redact(e.body_text().split_once(": ").map_or("", |(_, d)| d))))?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// The value of `name`, if given (once).
    pub fn take(&mut self, name: &'static str) -> Result<Option<String>, AdminError> {
        let mut found = None;
        let mut i = 0;
        while i < self.0.len() {
            if self.0[i].0 == name {
                let (_, v) = self.0.remove(i);
                if found.replace(v).is_some() {
                    return Err(AdminError::field(name, "given more than once"));
                }
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// A whole number from `min` to `max`, or `default`.
    pub fn number(&mut self, name: &'static str, min: i64, max: i64, default: i64) -> Result<i64, AdminError> {
        match self.take(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| AdminError::field(name, format!("must be a whole number from {min} to {max}"))),
        }
    }

    /// Refuses any parameter not taken.
    pub fn done(self) -> Result<(), AdminError> {
        match self.0.into_iter().next() {
            Some((name, _)) => Err(AdminError::UnknownParam(redact(&name))),
            None => Ok(()),
        }
    }
}

/// A lifespan such as `90s`, `12h`, `30d`, `2w`, read as the CLI reads it.
pub fn lifespan(field: &'static str, text: &str) -> Result<Duration, AdminError> {
    use crate::auth::lifespan::{parse, LifespanError};
    parse(text).map_err(|e| match e {
        LifespanError::Malformed => AdminError::field(field, format!("`{}` {e}", redact(text))),
        LifespanError::TooShort | LifespanError::TooLong => AdminError::field(field, e),
    })
}

/// When a token is to expire, as a request says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `expires_in`: this long from now.
    In(Duration),
    /// `expires_at`: at this time (Unix seconds).
    At(i64),
}

impl Expiry {
    /// Reads `expires_in` and `expires_at`, of which at most one may be given.
    pub fn from_fields(expires_in: Option<&str>, expires_at: Option<&str>) -> Result<Option<Expiry>, AdminError> {
        match (expires_in, expires_at) {
            (Some(_), Some(_)) => Err(AdminError::field("expires_in", "give expires_in or expires_at, not both")),
            (Some(d), None) => Ok(Some(Expiry::In(lifespan("expires_in", d)?))),
            (None, Some(t)) => parse_time(t).map(|t| Some(Expiry::At(t))).ok_or_else(|| {
                AdminError::field(
                    "expires_at",
                    format!("`{}` is not an RFC 3339 time such as 2030-01-31T12:00:00Z", redact(t)),
                )
            }),
            (None, None) => Ok(None),
        }
    }

    /// The expiry as Unix seconds, for a token whose life is counted from `now`.
    pub fn at(self, now: i64) -> i64 {
        match self {
            Expiry::In(d) => now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Expiry::At(t) => t,
        }
    }
}

/// Parses an RFC 3339 time (`Z` or a `±HH:MM` offset, years 0000 to 9999, `T` and `Z` in
/// either case) into Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let (base, offset) = match text.strip_suffix(['Z', 'z']) {
        Some(base) => (base, 0),
        None => {
            let cut = text.len().checked_sub(6)?;
            let (base, off) = (text.get(..cut)?, text.get(cut..)?.as_bytes());
            let sign = match off[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits = |a: u8, b: u8| (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'));
            let (hh, mm) = (digits(off[1], off[2])?, digits(off[4], off[5])?);
            if off[3] != b':' || hh > 23 || mm > 59 {
                return None;
            }
            (base, sign * (hh * 3600 + mm * 60))
        }
    };
    // humantime reads years from 1970 on: an earlier one is moved ahead by whole 400-year
    // Gregorian cycles, which repeat the calendar exactly, and the time moved back after.
    const CYCLE_YEARS: i64 = 400;
    const CYCLE_SECS: i64 = 146_097 * 86_400;
    let (year, rest) = (base.get(..4)?, base.get(4..)?);
    if !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let cycles = ((1970 - year).max(0) + CYCLE_YEARS - 1) / CYCLE_YEARS;
    let rest = match rest.as_bytes().get(6) {
        Some(b't') => format!("{}T{}", &rest[..6], &rest[7..]),
        _ => rest.to_owned(),
    };
    let t = humantime::parse_rfc3339(&format!("{:04}{rest}Z", year + cycles * CYCLE_YEARS)).ok()?;
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(secs - cycles * CYCLE_SECS - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        scopes: Vec<String>,
    }

    fn json_err(text: &str) -> AdminError {
        parse_json::<Sample>(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn json_errors_name_the_field_and_never_echo_a_token() {
        let e = json_err(r#"{"name": "x", "scopes": [], "colour": 1}"#);
        assert!(matches!(e, AdminError::BadJson(_)));
        assert!(e.to_string().starts_with("colour: unknown field `colour`"), "{e}");
        let e = json_err(r#"{"name": "x", "scopes": ["a", 5]}"#);
        assert!(e.to_string().starts_with("scopes[1]: invalid type"), "{e}");
        let e = json_err(r#"{"scopes": []}"#);
        assert!(e.to_string().starts_with("missing field `name`"), "{e}");
        let e = json_err(r#"{"name": "#);
        assert!(matches!(e, AdminError::MalformedJson(_)), "{e}");
        assert!(e.to_string().starts_with("malformed JSON: "), "{e}");
        let secret = crate::auth::token::TokenSecret::generate();
        let e = json_err(&format!(r#"{{"name": 1, "scopes": "{}"}}"#, secret.expose()));
        let e2 = json_err(&format!(r#"{{"name": "x", "scopes": "{}"}}"#, secret.expose()));
        for e in [e, e2] {
            assert!(!e.to_string().contains(secret.expose()), "{e}");
        }
        assert_eq!(json_err("[1]").status(), http::StatusCode::BAD_REQUEST);
        assert!(parse_json::<Sample>(br#"{"name": "x", "scopes": []} trailing"#).is_err());
        // A struct is an object, never an array read by position.
        assert!(matches!(parse_json::<Sample>(br#" ["x", []]"#), Err(AdminError::BadJson(_))));
    }

    #[test]
    fn redact_masks_every_token_shaped_run() {
        assert_eq!(redact("a patg_abc9 b patg_ c"), "a patg_<redacted> b patg_ c");
        assert_eq!(redact("nothing"), "nothing");
        assert_eq!(redact("é patg_x€"), "é patg_<redacted>€");
        assert_eq!(redact(""), "");
        let secret = crate::auth::token::TokenSecret::generate();
        let s = secret.expose();
        let b64 = |t: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(t)
        };
        let url_b64 = |t: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
        };
        let tail = &s[crate::auth::token::PREFIX.len()..];
        for text in [
            s.to_owned(),
            format!("embedded{s}in-a-word"),
            s.to_uppercase(),
            // Percent-encoded, wholly or in part, as in a URL path.
            format!("/admin/v1/tokens/patg%5F{tail}"),
            format!("/admin/v1/tokens/%70%61%74%67%5f{tail}"),
            s.bytes().map(|b| format!("%{b:02X}")).collect::<String>(),
            // Basic credentials in every position, and base64 run into other characters.
            format!("Basic {}", b64(&format!("x:{s}"))),
            format!("Basic {}", b64(&format!("{s}:"))),
            format!("Basic {}", b64(&format!("ab:{s}"))),
            format!("junk{}", b64(&format!("user:{s}"))),
            format!("{}=", url_b64(&format!("u:{s}"))),
            format!("\"{}\"", b64(&format!("{{\"token\": \"{s}\"}}"))),
        ] {
            let once = redact(&text);
            assert!(!once.contains(s) && !once.contains(tail), "{text} -> {once}");
            assert!(once.contains("<redacted>"), "{text} -> {once}");
            assert_eq!(redact(&once), once, "masking twice changes nothing");
        }
        // Base64 that holds no secret, and ordinary words, stay.
        for text in [
            b64("user:password"),
            "code:read tokens:manage".to_owned(),
            "100%".to_owned(),
            "%zz%".to_owned(),
        ] {
            assert_eq!(redact(&text), text);
        }
    }

    #[test]
    fn clean_keeps_one_short_line() {
        assert_eq!(clean("a\nb\r\tc\u{1b}[31m"), "a\\nb\\r\\tc\\u{1b}[31m");
        assert_eq!(clean("x\u{2028}y\u{202e}z\u{85}"), "x\\u{2028}y\\u{202e}z\\u{85}");
        assert_eq!(clean("é ünïcode ok"), "é ünïcode ok");
        let long = clean(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_SHOWN + 1);
        assert!(long.ends_with('…'));
        let secret = crate::auth::token::TokenSecret::generate();
        assert_eq!(clean(&format!("id {}\n", secret.expose())), "id patg_<redacted>\\n");
    }

    #[test]
    fn ids_and_owners_are_checked_before_the_store() {
        assert_eq!(token_id("AbC123").unwrap(), "AbC123");
        for bad in ["", "a\0", "a/b", "a b", "é", &"a".repeat(65)] {
            let e = token_id(bad).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::NOT_FOUND, "{bad:?}");
        }
        assert_eq!(owner("alice").unwrap(), "alice");
        assert_eq!(owner("Zoë Ünal").unwrap(), "Zoë Ünal");
        for bad in ["", " alice", "alice ", "a\0b", "a\nb", "\u{a0}x", &"a".repeat(201)] {
            let e = owner(bad).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(e.to_string(), "owner: must be 1 to 200 characters without control characters");
        }
    }

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, v.parse().unwrap());
            m
        };
        assert!(is_json(&h("application/json")));
        assert!(is_json(&h("Application/JSON; charset=utf-8")));
        assert!(is_json(&h("application/merge-patch+json")));
        assert!(!is_json(&h("text/plain")));
        assert!(!is_json(&h("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn params_are_known_once_and_numbers_bounded() {
        let mut p = Params(vec![("limit".into(), "5".into()), ("x".into(), "1".into())]);
        assert_eq!(p.number("limit", 1, 1000, 100).unwrap(), 5);
        assert_eq!(p.number("since", 0, i64::MAX, 0).unwrap(), 0);
        assert_eq!(p.done().unwrap_err().to_string(), "unknown query parameter `x`");
        let mut p = Params(vec![("limit".into(), "0".into())]);
        assert_eq!(
            p.number("limit", 1, 1000, 100).unwrap_err().to_string(),
            "limit: must be a whole number from 1 to 1000"
        );
        let mut p = Params(vec![("limit".into(), "abc".into())]);
        assert!(p.number("limit", 1, 1000, 100).is_err());
        let mut p = Params(vec![("state".into(), "a".into()), ("state".into(), "b".into())]);
        assert_eq!(p.take("state").unwrap_err().to_string(), "state: given more than once");
    }

    #[test]
    fn expiry_is_one_of_two_fields() {
        assert_eq!(Expiry::from_fields(None, None).unwrap(), None);
        assert_eq!(
            Expiry::from_fields(Some("30d"), None).unwrap(),
            Some(Expiry::In(Duration::from_secs(30 * 86400)))
        );
        assert_eq!(
            Expiry::from_fields(None, Some("2030-01-31T12:00:00Z")).unwrap(),
            Some(Expiry::At(1_896_091_200))
        );
        let e = Expiry::from_fields(Some("1h"), Some("2030-01-31T12:00:00Z")).unwrap_err();
        assert_eq!(e.to_string(), "expires_in: give expires_in or expires_at, not both");
        let e = Expiry::from_fields(Some("soon"), None).unwrap_err();
        // The lifespan reader's own words follow (crate::auth::lifespan).
        assert!(e.to_string().starts_with("expires_in: `soon` is not a"), "{e}");
        let e = Expiry::from_fields(Some("0s"), None).unwrap_err();
        assert_eq!(e.to_string(), "expires_in: must be at least 1s");
        let e = Expiry::from_fields(None, Some("tomorrow")).unwrap_err();
        assert!(e.to_string().starts_with("expires_at: `tomorrow` is not an RFC 3339 time"), "{e}");
        assert_eq!(Expiry::In(Duration::from_secs(10)).at(5), 15);
        assert_eq!(Expiry::In(Duration::MAX).at(5), i64::MAX);
    }

    #[test]
    fn rfc3339_times_with_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:00-00:30"), Some(1800));
        assert_eq!(parse_time("2030-01-31T12:00:00.5Z"), Some(1_896_091_200));
        assert_eq!(parse_time("2030-01-31t12:00:00z"), Some(1_896_091_200));
        // Before 1970 too (RFC 3339 has years from 0000): a time that is not in the future.
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_time("1969-12-31T23:00:00-02:00"), Some(3600));
        assert_eq!(parse_time("1968-02-29T00:00:00Z"), Some(-58_060_800));
        assert_eq!(parse_time("1600-03-01T00:00:00Z"), Some(-11_670_912_000));
        assert_eq!(parse_time("0001-01-01T00:00:00+00:00"), Some(-62_135_596_800));
        assert_eq!(parse_time("0000-01-01T00:00:00Z"), Some(-62_167_219_200));
        for bad in [
            "",
            "Z",
            "+01:00",
            "2030-01-31",
            "2030-01-31T12:00:00",
            "2030-01-31T12:00:00+1:000",
            "2030-01-31T12:00:00+24:00",
            "1969-02-29T00:00:00Z",
            "2024-01-01T12:99:00Z",
            "+123-01-01T00:00:00Z",
            "2030-01-31x12:00:00Z",
            "é€€€€€€",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
