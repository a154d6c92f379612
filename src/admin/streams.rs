//! The audit stream endpoints: create, list, read, change and delete the sinks that the
//! audit trail is delivered to ([`crate::audit::streams`]). Every one needs
//! `auditstreams:manage` (which `full` holds and `tokens:admin` does not), checked before
//! the body is read.
//!
//! A stream's HMAC secret is taken, stored and used, but never shown: answers say only
//! whether one is set (`secret_set`), and no message or log line holds it. A file stream
//! writes only inside `audit.stream_dir`; without it, file streams are refused.
//!
//! Each create, change and delete enters the audit trail with its caller and client, in
//! the store's transaction ([`crate::store::streams`]).

use std::path::Path;
use std::sync::LazyLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::RequestInfo;
use super::caller::Caller;
use super::error::AdminError;
use super::request::{self, Body, Segment};
use super::AdminState;
use crate::audit::streams::{is_inside, Streams, WebhookTarget, MAX_TARGET};
use crate::audit::webhook_allow::WebhookAllow;
use crate::auth::scope::Scope;
use crate::store::format_time;
use crate::store::streams::{NewStream, StreamChange, StreamError, StreamKind, StreamRecord, StreamSecret};

/// The scope every stream endpoint needs.
static MANAGE: LazyLock<Scope> =
    LazyLock::new(|| Scope::from_name("auditstreams:manage").expect("the scope table has auditstreams:manage"));

/// The shortest and longest HMAC secret.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=1024;

impl From<StreamError> for AdminError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::NotFound(id) => AdminError::NoStream(id),
            StreamError::NameTaken(_) | StreamError::TooMany => AdminError::StreamConflict(e.to_string()),
            StreamError::Store(e) => AdminError::Store(e),
        }
    }
}

/// A stream as the admin API shows it: never its secret, only whether it has one.
#[derive(Debug, Serialize)]
pub struct StreamJson {
    id: String,
    name: String,
    kind: StreamKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    secret_set: bool,
    enabled: bool,
    /// The seq of the last audit entry delivered.
    delivered_seq: i64,
    created_at: String,
    updated_at: String,
}

impl From<StreamRecord> for StreamJson {
    fn from(r: StreamRecord) -> Self {
        let (url, path) = match r.kind {
            StreamKind::Webhook => (Some(r.target), None),
            StreamKind::File => (None, Some(r.target)),
        };
        StreamJson {
            id: r.id,
            name: r.name,
            kind: r.kind,
            url,
            path,
            secret_set: r.secret.is_some(),
            enabled: r.enabled,
            delivered_seq: r.delivered_seq,
            created_at: format_time(r.created_at),
            updated_at: format_time(r.updated_at),
        }
    }
}

/// Every stream.
#[derive(Serialize)]
pub struct StreamList {
    streams: Vec<StreamJson>,
}

/// The body of `POST /admin/v1/audit/streams`. An optional member is left out, never null.
/// No Debug: it holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    kind: String,
    #[serde(default, deserialize_with = "request::not_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    path: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    secret: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    enabled: Option<bool>,
}

/// The body of `PATCH /admin/v1/audit/streams/{id}`: what is left out stays. No Debug: it
/// may hold the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default, deserialize_with = "request::not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    path: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    secret: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    enabled: Option<bool>,
}

/// A name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it is a metric label).
fn name(n: &str) -> Result<(), AdminError> {
    let ok = (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(())
        .ok_or_else(|| AdminError::field("name", "must be 1 to 64 letters, digits, `.`, `_` or `-`"))
}

/// A webhook URL, checked; one that names an address must name one that
/// `audit.webhook_allow` lets webhooks reach (a name is checked at each delivery).
fn url(s: &AdminState, u: &str) -> Result<(), AdminError> {
    let target = WebhookTarget::parse(u).map_err(|e| AdminError::field("url", e))?;
    let default = WebhookAllow::default();
    let allow = s.streams().map_or(&default, Streams::webhook_allow);
    match target.address().map(|ip| allow.check(ip)) {
        Some(Err(e)) => Err(AdminError::field("url", e)),
        _ => Ok(()),
    }
}

fn path(s: &AdminState, p: &str) -> Result<(), AdminError> {
    if p.len() > MAX_TARGET || p.contains('\0') {
        return Err(AdminError::field(
            "path",
            format!("must be at most {MAX_TARGET} characters, without NUL"),
        ));
    }
    let p = Path::new(p);
    if !p.is_absolute() {
        return Err(AdminError::field("path", "must be an absolute path"));
    }
    let Some(dir) = s.streams().and_then(|st| st.stream_dir()) else {
        return Err(AdminError::field("path", "file streams are off: set audit.stream_dir"));
    };
    if !is_inside(p, dir) {
        return Err(AdminError::field(
            "path",
            format!("must name a file inside {} (audit.stream_dir), without `.` or `..`", dir.display()),
        ));
    }
    Ok(())
}

fn secret(s: String) -> Result<StreamSecret, AdminError> {
    let n = s.chars().count();
    if !SECRET_LEN.contains(&n) || s.chars().any(char::is_control) {
        return Err(AdminError::field(
            "secret",
            format!(
                "must be {} to {} characters without control characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        ));
    }
    Ok(StreamSecret::new(s))
}

/// A stream id from a path: ids are ASCII letters and digits, so anything else is a
/// stream that does not exist.
fn stream_id(id: &str) -> Result<&str, AdminError> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(AdminError::NoStream(id.to_owned()))
    }
}

/// Members that belong to the other kind of stream.
fn only_for(kind: StreamKind, url: bool, path: bool, secret: bool) -> Result<(), AdminError> {
    match kind {
        StreamKind::Webhook if path => Err(AdminError::field("path", "only for file streams")),
        StreamKind::File if url => Err(AdminError::field("url", "only for webhook streams")),
        StreamKind::File if secret => Err(AdminError::field("secret", "only for webhook streams")),
        _ => Ok(()),
    }
}

fn changed(s: &AdminState) {
    if let Some(st) = s.streams() {
        st.changed();
    }
}

/// `POST /admin/v1/audit/streams`: a new stream, delivering from its own creation's entry on.
pub async fn create(
    State(s): State<AdminState>,
    caller: Caller,
    info: RequestInfo,
    body: Body,
) -> Result<(StatusCode, Json<StreamJson>), AdminError> {
    let permit = caller.require_scope(*MANAGE)?;
    let b: CreateBody = body.parse()?;
    name(&b.name)?;
    let kind = StreamKind::parse(&b.kind).ok_or_else(|| AdminError::field("kind", "must be webhook or file"))?;
    only_for(kind, b.url.is_some(), b.path.is_some(), b.secret.is_some())?;
    let target = match kind {
        StreamKind::Webhook => {
            let u = b.url.ok_or_else(|| AdminError::field("url", "a webhook stream needs one"))?;
            url(&s, &u)?;
            u
        }
        StreamKind::File => {
            let p = b.path.ok_or_else(|| AdminError::field("path", "a file stream needs one"))?;
            path(&s, &p)?;
            p
        }
    };
    let new = NewStream {
        name: b.name,
        kind,
        target,
        secret: b.secret.map(secret).transpose()?,
        enabled: b.enabled.unwrap_or(true),
    };
    let record = s.store().create_stream(new, &info.actor(permit.owner())).await?;
    tracing::info!(target: "patgate::admin", actor = permit.owner(), stream.id = %record.id, stream.name = %record.name, kind = record.kind.as_str(), "Audit stream created");
    changed(&s);
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// `GET /admin/v1/audit/streams`.
pub async fn list(State(s): State<AdminState>, caller: Caller, q: request::Params) -> Result<Json<StreamList>, AdminError> {
    caller.require_scope(*MANAGE)?;
    q.done()?;
    let streams = s.store().streams().await?;
    Ok(Json(StreamList {
        streams: streams.into_iter().map(StreamJson::from).collect(),
    }))
}

/// `GET /admin/v1/audit/streams/{id}`.
pub async fn get(State(s): State<AdminState>, caller: Caller, Segment(id): Segment) -> Result<Json<StreamJson>, AdminError> {
    caller.require_scope(*MANAGE)?;
    Ok(Json(s.store().stream(stream_id(&id)?).await?.into()))
}

/// `PATCH /admin/v1/audit/streams/{id}`: rename, move, re-key, pause or resume a stream;
/// its kind and its place in the trail stay.
pub async fn update(
    State(s): State<AdminState>,
    caller: Caller,
    info: RequestInfo,
    Segment(id): Segment,
    body: Body,
) -> Result<Json<StreamJson>, AdminError> {
    let permit = caller.require_scope(*MANAGE)?;
    let b: UpdateBody = body.parse()?;
    if b.name.is_none() && b.url.is_none() && b.path.is_none() && b.secret.is_none() && b.enabled.is_none() {
        return Err(AdminError::BadJson(
            "nothing to change: give at least one of name, url, path, secret, enabled".into(),
        ));
    }
    if let Some(n) = &b.name {
        name(n)?;
    }
    let current = s.store().stream(stream_id(&id)?).await?;
    only_for(current.kind, b.url.is_some(), b.path.is_some(), b.secret.is_some())?;
    if let Some(u) = &b.url {
        url(&s, u)?;
    }
    if let Some(p) = &b.path {
        path(&s, p)?;
    }
    let change = StreamChange {
        name: b.name,
        target: b.url.or(b.path),
        secret: b.secret.map(secret).transpose()?,
        enabled: b.enabled,
    };
    let record = s.store().change_stream(&id, change, &info.actor(permit.owner())).await?;
    tracing::info!(target: "patgate::admin", actor = permit.owner(), stream.id = %record.id, stream.name = %record.name, enabled = record.enabled, "Audit stream changed");
    changed(&s);
    Ok(Json(record.into()))
}

/// `DELETE /admin/v1/audit/streams/{id}`: the stream as it was.
pub async fn delete(
    State(s): State<AdminState>,
    caller: Caller,
    info: RequestInfo,
    Segment(id): Segment,
) -> Result<Json<StreamJson>, AdminError> {
    let permit = caller.require_scope(*MANAGE)?;
    let record = s.store().delete_stream(stream_id(&id)?, &info.actor(permit.owner())).await?;
    tracing::info!(target: "patgate::admin", actor = permit.owner(), stream.id = %record.id, stream.name = %record.name, "Audit stream deleted");
    changed(&s);
    Ok(Json(record.into()))
}
