//! [`AdminError`]: every reason an admin request fails, and the one place where each
//! becomes a status and a `{"error": "..."}` body. Messages are one line and never hold a
//! secret; the reason also travels to the request log through a response extension.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};

use super::policy::PolicyError;
use super::shown::clean;
use crate::auth::AuthError;
use crate::auth::UNAUTHORIZED_BODY;
use crate::store::StoreError;

/// The `WWW-Authenticate` value sent with every 401 of the admin API.
pub const CHALLENGE: &str = "Bearer realm=\"patgate\"";

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No usable token (401, or 400 for an unreadable Authorization header), or a token
    /// without the scope (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON, but a field is unknown, missing or of the wrong type; the
    /// message names it.
    #[error("{0}")]
    BadJson(String),
    /// A field or query parameter that cannot be used.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    /// A query parameter this endpoint does not take.
    #[error("unknown query parameter `{0}`")]
    UnknownParam(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {}", humantime::format_duration(*.within))]
    BodyTimeout { within: Duration },
    #[error("send the body as JSON with Content-Type: application/json")]
    NotJson,
    /// A request a web page could have sent on someone's behalf.
    #[error("requests from web pages (with an Origin header) may only read")]
    FromWebPage,
    /// A console session's write without the session's `X-CSRF-Token`.
    #[error("csrf: missing or wrong X-CSRF-Token")]
    Csrf,
    #[error("no such endpoint")]
    NoEndpoint,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("too many leak reports from this address; retry in {}s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    /// The address failed to authenticate too often (`[brute_force]`, shared with the proxy).
    #[error(transparent)]
    Blocked(#[from] crate::guard::lockout::Blocked),
    /// Every slot for waiting on the event feed is taken.
    #[error("too many event feed requests are waiting; retry in {}s", .retry_after.as_secs().max(1))]
    TooManyWaiting { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No audit stream has this id.
    #[error("no audit stream with id {0}")]
    NoStream(String),
    /// Another audit stream has the name, or there are as many as there may be.
    #[error("{0}")]
    StreamConflict(String),
}

impl AdminError {
    /// A field that cannot be used, and why.
    pub fn field(field: &'static str, reason: impl std::fmt::Display) -> AdminError {
        AdminError::Field {
            field,
            reason: reason.to_string(),
        }
    }

    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        use StatusCode as S;
        match self {
            AdminError::Auth(e) => e.status(),
            // Least privilege: the caller lacks what it would grant.
            AdminError::Policy(PolicyError::Exceeds { .. }) => S::FORBIDDEN,
            AdminError::MalformedJson(_)
            | AdminError::BadJson(_)
            | AdminError::Field { .. }
            | AdminError::UnknownParam(_)
            | AdminError::Policy(_)
            | AdminError::BodyUnreadable => S::BAD_REQUEST,
            AdminError::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            AdminError::BodyTimeout { .. } => S::REQUEST_TIMEOUT,
            AdminError::NotJson => S::UNSUPPORTED_MEDIA_TYPE,
            AdminError::FromWebPage | AdminError::Csrf => S::FORBIDDEN,
            AdminError::NoEndpoint | AdminError::NoStream(_) => S::NOT_FOUND,
            AdminError::StreamConflict(_) => S::CONFLICT,
            AdminError::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            AdminError::RateLimited { .. } | AdminError::TooManyWaiting { .. } | AdminError::Blocked(_) => S::TOO_MANY_REQUESTS,
            AdminError::Store(e) => match e {
                StoreError::NotFound(_) => S::NOT_FOUND,
                StoreError::NotLive { .. } => S::CONFLICT,
                StoreError::Invalid(_) => S::BAD_REQUEST,
                StoreError::Unavailable(_) | StoreError::TaskStopped => S::SERVICE_UNAVAILABLE,
                StoreError::Open { .. } | StoreError::SchemaTooNew { .. } | StoreError::Database(_) => S::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The one line the client reads. Every 401 reads the same; a store fault is told
    /// in the server's log, not to the client.
    pub fn public_message(&self) -> String {
        match self {
            AdminError::Auth(
                AuthError::Missing
                | AuthError::Malformed
                | AuthError::Unknown
                | AuthError::Expired { .. }
                | AuthError::Revoked { .. }
                | AuthError::Superseded { .. },
            ) => UNAUTHORIZED_BODY.to_owned(),
            AdminError::Store(StoreError::TaskStopped) => format!("the token store is unavailable: {}", StoreError::TaskStopped),
            AdminError::Store(StoreError::Open { .. } | StoreError::SchemaTooNew { .. } | StoreError::Database(_)) => {
                "internal error in the token store; the server's log has the details".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// Why a request failed, for the request log (a response extension).
#[derive(Debug, Clone)]
pub struct Reason(pub String);

/// A refused authentication or authorization, for the audit trail (a response extension).
/// A request without any credential is not one.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The credential, or its scope: with the token the refused credential named, when it
    /// is known and the caller is not.
    Credential(Option<crate::auth::KnownToken>),
    /// The address is locked out (`[brute_force]`).
    Blocked,
}

#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Messages may quote what the client sent: never echo a secret, and keep it one
        // short line here and in the request log.
        let error = clean(&self.public_message());
        let mut r = (status, Json(ErrorBody { error })).into_response();
        let h = r.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        if let AdminError::RateLimited { retry_after } | AdminError::TooManyWaiting { retry_after } = &self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
        }
        if let AdminError::Blocked(b) = &self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(b.retry_after_secs()));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let refusal = match &self {
            AdminError::Auth(AuthError::Missing) => None,
            AdminError::Auth(e) => Some(Refusal::Credential(e.known_token().cloned())),
            AdminError::Blocked(_) => Some(Refusal::Blocked),
            _ => None,
        };
        if let Some(refusal) = refusal {
            r.extensions_mut().insert(refusal);
        }
        r.extensions_mut().insert(Reason(clean(&self.to_string())));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::CredentialError;
    use crate::auth::scope::Scope;
    use crate::store::{InvalidToken, TokenState};

    #[test]
    fn every_error_has_its_status_and_one_json_line() {
        use StatusCode as S;
        let scope = Scope::from_name("tokens:admin").unwrap();
        let known = crate::auth::KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        };
        let cases: Vec<(AdminError, StatusCode)> = vec![
            (AdminError::Auth(AuthError::Credential(CredentialError::BadBase64)), S::BAD_REQUEST),
            (AdminError::Auth(AuthError::Missing), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::Malformed), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::Unknown), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::Expired { token: known.clone() }), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::Revoked { token: known.clone() }), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::Superseded { token: known }), S::UNAUTHORIZED),
            (AdminError::Auth(AuthError::ScopeMissing { scope }), S::FORBIDDEN),
            (AdminError::Auth(AuthError::OrgMissing { org: "x".into() }), S::FORBIDDEN),
            (AdminError::MalformedJson("eof".into()), S::BAD_REQUEST),
            (AdminError::BadJson("unknown field `x`".into()), S::BAD_REQUEST),
            (AdminError::field("limit", "too big"), S::BAD_REQUEST),
            (AdminError::UnknownParam("x".into()), S::BAD_REQUEST),
            (AdminError::Policy(PolicyError::Full), S::BAD_REQUEST),
            (AdminError::TooLarge { limit: 10 }, S::PAYLOAD_TOO_LARGE),
            (AdminError::BodyUnreadable, S::BAD_REQUEST),
            (
                AdminError::BodyTimeout {
                    within: Duration::from_secs(30),
                },
                S::REQUEST_TIMEOUT,
            ),
            (AdminError::NotJson, S::UNSUPPORTED_MEDIA_TYPE),
            (AdminError::FromWebPage, S::FORBIDDEN),
            (AdminError::Csrf, S::FORBIDDEN),
            (AdminError::NoEndpoint, S::NOT_FOUND),
            (AdminError::MethodNotAllowed, S::METHOD_NOT_ALLOWED),
            (
                AdminError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                S::TOO_MANY_REQUESTS,
            ),
            (
                AdminError::TooManyWaiting {
                    retry_after: Duration::from_secs(1),
                },
                S::TOO_MANY_REQUESTS,
            ),
            (AdminError::Store(StoreError::NotFound("a".into())), S::NOT_FOUND),
            (AdminError::NoStream("a".into()), S::NOT_FOUND),
            (AdminError::StreamConflict("name: taken".into()), S::CONFLICT),
            (
                AdminError::Store(StoreError::NotLive {
                    id: "a".into(),
                    state: TokenState::Revoked,
                }),
                S::CONFLICT,
            ),
            (AdminError::Store(StoreError::Invalid(InvalidToken::Name)), S::BAD_REQUEST),
            (AdminError::Store(StoreError::Unavailable("down".into())), S::SERVICE_UNAVAILABLE),
            (AdminError::Store(StoreError::TaskStopped), S::SERVICE_UNAVAILABLE),
            (
                AdminError::Store(StoreError::Open {
                    path: "p".into(),
                    reason: "r".into(),
                }),
                S::INTERNAL_SERVER_ERROR,
            ),
            (
                AdminError::Store(StoreError::SchemaTooNew { found: 9, known: 1 }),
                S::INTERNAL_SERVER_ERROR,
            ),
            (
                AdminError::Store(StoreError::Database("disk I/O error".into())),
                S::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.status(), want, "{e}");
            let msg = e.public_message();
            assert!(!msg.contains('\n') && !msg.is_empty(), "{e}");
            let r = e.into_response();
            assert_eq!(r.status(), want);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(r.headers().contains_key(header::WWW_AUTHENTICATE), want == S::UNAUTHORIZED);
            assert_eq!(r.headers().contains_key(header::RETRY_AFTER), want == S::TOO_MANY_REQUESTS);
            assert!(r.extensions().get::<Reason>().is_some());
        }
    }

    #[test]
    fn unavailable_names_the_store_and_faults_stay_in_the_log() {
        let e = AdminError::Store(StoreError::Unavailable("connection refused".into()));
        assert_eq!(e.public_message(), "the token store is unavailable: connection refused");
        assert!(AdminError::Store(StoreError::TaskStopped)
            .public_message()
            .starts_with("the token store is unavailable: "));
        let e = AdminError::Store(StoreError::Database("no such table: tokens".into()));
        assert!(!e.public_message().contains("tokens"));
        let e = AdminError::RateLimited {
            retry_after: Duration::from_millis(200),
        };
        assert_eq!(e.to_string(), "too many leak reports from this address; retry in 1s");
    }
}
