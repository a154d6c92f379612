//! Why a request was not forwarded, or failed upstream ([`ProxyError`]), and the one
//! place where such an error becomes an answer ([`error_response`]): its status, one line
//! of text, and for 401 the challenge.

use std::time::Duration;

use http::{header, HeaderValue, Method, Response, StatusCode};

use super::body::{full, Body};
use super::host::HostError;
use super::http1::body::BodyError;
use super::http1::head::HeadError;
use crate::auth::rules::{PathError, QueryError};
use crate::auth::{AuthError, CHALLENGE, UNAUTHORIZED_BODY};
use crate::guard::{body_rate, lockout};

/// Why a request was not forwarded, or failed upstream. [`super::Proxy::handle`] maps each to
/// a status and a one-line body.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("absolute-form request targets are not accepted")]
    AbsoluteForm,
    #[error("method {0} is not accepted")]
    MethodNotAllowed(Method),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no route for this path")]
    NoRoute,
    #[error("no rule of route {route} admits {method} on this path")]
    NoRule { route: String, method: Method },
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    #[error("upstream did not answer within {}", humantime::format_duration(*.0))]
    UpstreamTimeout(Duration),
    #[error("upstream failed")]
    UpstreamFailed,
    #[error("git http-backend could not be run")]
    CgiUnavailable,
    #[error("git http-backend gave a malformed answer")]
    CgiMalformed,
    #[error(transparent)]
    Blocked(#[from] lockout::Blocked),
    #[error(transparent)]
    BodyTooSlow(#[from] body_rate::BodyTooSlow),
    #[error("too many requests in flight from this address")]
    TooManyRequests,
    #[error("too many requests in flight; retry later")]
    Busy,
}

impl ProxyError {
    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Head(e) => e.status(),
            ProxyError::AbsoluteForm | ProxyError::Host(_) | ProxyError::Body(_) | ProxyError::Path(_) | ProxyError::Query(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Auth(e) => e.status(),
            ProxyError::NoRule { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UpstreamUnreachable | ProxyError::UpstreamFailed | ProxyError::CgiUnavailable | ProxyError::CgiMalformed => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Blocked(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BodyTooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::TooManyRequests | ProxyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The one line the client reads. Every 401 reads the same.
    pub fn public_message(&self) -> String {
        if self.status() == StatusCode::UNAUTHORIZED {
            return UNAUTHORIZED_BODY.to_owned();
        }
        self.to_string()
    }
}

/// The answer for an error: its status, a one-line text body, and for 401 the challenge.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", e.public_message())));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if e.status() == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    if let ProxyError::Blocked(b) = e {
        h.insert(header::RETRY_AFTER, HeaderValue::from(b.retry_after_secs()));
    }
    // A request that could be read two ways, or whose body was cut, may have left the
    // connection in doubt too.
    if e.status() == StatusCode::BAD_REQUEST || e.status() == StatusCode::REQUEST_TIMEOUT {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::auth::credentials::CredentialError;
    use crate::proxy::{host, http1};

    fn known() -> auth::KnownToken {
        auth::KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        }
    }

    #[test]
    fn every_error_has_its_status_and_one_line() {
        use StatusCode as S;
        let cases: Vec<(ProxyError, StatusCode)> = vec![
            (ProxyError::AbsoluteForm, S::BAD_REQUEST),
            (ProxyError::MethodNotAllowed(Method::TRACE), S::METHOD_NOT_ALLOWED),
            (ProxyError::Head(http1::head::HeadError::BothLengths), S::BAD_REQUEST),
            (
                ProxyError::Head(http1::head::HeadError::TooLarge),
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (ProxyError::Head(http1::head::HeadError::TransferCoding), S::NOT_IMPLEMENTED),
            (ProxyError::Host(host::HostError::Userinfo), S::BAD_REQUEST),
            (ProxyError::Body(http1::body::BodyError::Incomplete), S::BAD_REQUEST),
            (ProxyError::Path(PathError::DotSegment), S::BAD_REQUEST),
            (ProxyError::Auth(AuthError::Credential(CredentialError::BadBase64)), S::BAD_REQUEST),
            (ProxyError::Auth(AuthError::Missing), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::Malformed), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::Unknown), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::Expired { token: known() }), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::Revoked { token: known() }), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::Superseded { token: known() }), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::RotatedReused { token: known() }), S::UNAUTHORIZED),
            (ProxyError::Auth(AuthError::OutsideRanges { token: known() }), S::UNAUTHORIZED),
            (
                ProxyError::Auth(AuthError::RepoMissing {
                    org: "acme".into(),
                    repo: "app".into(),
                }),
                S::FORBIDDEN,
            ),
            (ProxyError::Auth(AuthError::RepoUnnamed { route: "/{org}/**".into() }), S::FORBIDDEN),
            (
                ProxyError::Auth(AuthError::ScopeMissing {
                    scope: crate::auth::scope::Scope::from_name("code:write").unwrap(),
                }),
                S::FORBIDDEN,
            ),
            (ProxyError::Auth(AuthError::OrgMissing { org: "x".into() }), S::FORBIDDEN),
            (ProxyError::NoRoute, S::NOT_FOUND),
            (
                ProxyError::NoRule {
                    route: "/x".into(),
                    method: Method::GET,
                },
                S::FORBIDDEN,
            ),
            (ProxyError::Query(QueryError::DuplicateService), S::BAD_REQUEST),
            (ProxyError::UpstreamUnreachable, S::BAD_GATEWAY),
            (ProxyError::UpstreamTimeout(Duration::from_secs(60)), S::GATEWAY_TIMEOUT),
            (ProxyError::UpstreamFailed, S::BAD_GATEWAY),
            (ProxyError::CgiUnavailable, S::BAD_GATEWAY),
            (ProxyError::CgiMalformed, S::BAD_GATEWAY),
            (
                ProxyError::Blocked(lockout::Blocked {
                    retry_after: Duration::from_millis(1500),
                }),
                S::TOO_MANY_REQUESTS,
            ),
            (
                ProxyError::BodyTooSlow(body_rate::BodyTooSlow { bytes_per_sec: 1024 }),
                S::REQUEST_TIMEOUT,
            ),
            (ProxyError::TooManyRequests, S::SERVICE_UNAVAILABLE),
            (ProxyError::Busy, S::SERVICE_UNAVAILABLE),
        ];
        // The table holds every variant: `variant` matches without a wildcard, so a new
        // variant does not compile until it is named there, and then fails here until the
        // table has a case of it.
        let mut listed: Vec<&str> = cases.iter().map(|(e, _)| variant(e)).collect();
        listed.sort_unstable();
        listed.dedup();
        let mut every = VARIANTS.to_vec();
        every.sort_unstable();
        assert_eq!(listed, every, "a variant has no case in the table");
        for (e, want) in cases {
            let r = error_response(&e);
            assert_eq!(r.status(), want, "{e}");
            assert!(!e.public_message().contains('\n'));
            assert_eq!(r.headers().contains_key(header::WWW_AUTHENTICATE), want == S::UNAUTHORIZED);
            assert_eq!(r.headers().contains_key(header::RETRY_AFTER), want == S::TOO_MANY_REQUESTS);
        }
        let r = error_response(&ProxyError::Blocked(lockout::Blocked {
            retry_after: Duration::from_millis(1500),
        }));
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    /// Every variant of [`ProxyError`] (and of the [`AuthError`] it carries), by name.
    const VARIANTS: &[&str] = &[
        "AbsoluteForm",
        "MethodNotAllowed",
        "Head",
        "Host",
        "Body",
        "Path",
        "Auth::Credential",
        "Auth::Missing",
        "Auth::Malformed",
        "Auth::Unknown",
        "Auth::Expired",
        "Auth::Revoked",
        "Auth::Superseded",
        "Auth::RotatedReused",
        "Auth::OutsideRanges",
        "Auth::ScopeMissing",
        "Auth::OrgMissing",
        "Auth::RepoMissing",
        "Auth::RepoUnnamed",
        "NoRoute",
        "NoRule",
        "Query",
        "UpstreamUnreachable",
        "UpstreamTimeout",
        "UpstreamFailed",
        "CgiUnavailable",
        "CgiMalformed",
        "Blocked",
        "BodyTooSlow",
        "TooManyRequests",
        "Busy",
    ];

    /// The name of `e`'s variant in [`VARIANTS`]. No wildcard: a new variant must be named.
    fn variant(e: &ProxyError) -> &'static str {
        match e {
            ProxyError::AbsoluteForm => "AbsoluteForm",
            ProxyError::MethodNotAllowed(_) => "MethodNotAllowed",
            ProxyError::Head(_) => "Head",
            ProxyError::Host(_) => "Host",
            ProxyError::Body(_) => "Body",
            ProxyError::Path(_) => "Path",
            ProxyError::Auth(a) => match a {
                AuthError::Credential(_) => "Auth::Credential",
                AuthError::Missing => "Auth::Missing",
                AuthError::Malformed => "Auth::Malformed",
                AuthError::Unknown => "Auth::Unknown",
                AuthError::Expired { .. } => "Auth::Expired",
                AuthError::Revoked { .. } => "Auth::Revoked",
                AuthError::Superseded { .. } => "Auth::Superseded",
                AuthError::RotatedReused { .. } => "Auth::RotatedReused",
                AuthError::OutsideRanges { .. } => "Auth::OutsideRanges",
                AuthError::ScopeMissing { .. } => "Auth::ScopeMissing",
                AuthError::OrgMissing { .. } => "Auth::OrgMissing",
                AuthError::RepoMissing { .. } => "Auth::RepoMissing",
                AuthError::RepoUnnamed { .. } => "Auth::RepoUnnamed",
            },
            ProxyError::NoRoute => "NoRoute",
            ProxyError::NoRule { .. } => "NoRule",
            ProxyError::Query(_) => "Query",
            ProxyError::UpstreamUnreachable => "UpstreamUnreachable",
            ProxyError::UpstreamTimeout(_) => "UpstreamTimeout",
            ProxyError::UpstreamFailed => "UpstreamFailed",
            ProxyError::CgiUnavailable => "CgiUnavailable",
            ProxyError::CgiMalformed => "CgiMalformed",
            ProxyError::Blocked(_) => "Blocked",
            ProxyError::BodyTooSlow(_) => "BodyTooSlow",
            ProxyError::TooManyRequests => "TooManyRequests",
            ProxyError::Busy => "Busy",
        }
    }

    #[test]
    fn every_401_reads_the_same() {
        let bodies: Vec<String> = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::Unknown,
            AuthError::Expired { token: known() },
            AuthError::Revoked { token: known() },
            AuthError::Superseded { token: known() },
            AuthError::RotatedReused { token: known() },
            AuthError::OutsideRanges { token: known() },
        ]
        .into_iter()
        .map(|e| ProxyError::Auth(e).public_message())
        .collect();
        assert!(bodies.iter().all(|b| b == UNAUTHORIZED_BODY));
    }
}
