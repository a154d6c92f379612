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
use super::AdminState;

/// A request body, read up to `[admin] max_body_bytes` (413 beyond), not yet parsed:
/// handlers check the caller's scope before they look at it.
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
        let bytes = Limited::new(req.into_body(), limit)
            .collect()
            .await
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
}

/// Parses JSON into `T`. A field that is unknown, missing or of the wrong type is named
/// (with its path, e.g. `scopes[1]`); anything shaped like a token is masked.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
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

/// `text` with every `patg_...` run masked, so that no message or log line echoes a secret.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(crate::auth::token::PREFIX) {
        out.push_str(&rest[..i]);
        out.push_str("patg_<redacted>");
        let after = &rest[i + crate::auth::token::PREFIX.len()..];
        let end = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
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

/// A lifespan such as `90s`, `12h`, `30d` (at least one second).
pub fn lifespan(field: &'static str, text: &str) -> Result<Duration, AdminError> {
    let d = humantime::parse_duration(text)
        .map_err(|_| AdminError::field(field, format!("`{}` is not a duration; write e.g. 90s, 12h, 30d", redact(text))))?;
    if d < Duration::from_secs(1) {
        return Err(AdminError::field(field, "must be at least 1s"));
    }
    Ok(d)
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

/// Parses an RFC 3339 time (`Z` or a `±HH:MM` offset) into Unix seconds.
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
    let t = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(secs - offset)
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
    }

    #[test]
    fn redact_masks_every_token_shaped_run() {
        assert_eq!(redact("a patg_abc9 b patg_ c"), "a patg_<redacted> b patg_<redacted> c");
        assert_eq!(redact("nothing"), "nothing");
        assert_eq!(redact("é patg_x€"), "é patg_<redacted>€");
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
        assert!(e.to_string().starts_with("expires_in: `soon` is not a duration"), "{e}");
        let e = Expiry::from_fields(Some("500ms"), None).unwrap_err();
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
        for bad in [
            "",
            "Z",
            "+01:00",
            "2030-01-31",
            "2030-01-31T12:00:00",
            "2030-01-31T12:00:00+1:000",
            "2030-01-31T12:00:00+24:00",
            "é€€€€€€",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
