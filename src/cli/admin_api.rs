//! The token and audit commands carried out through a running server's admin API
//! (`--admin-url`): a client of `/admin/v1/` that speaks only the documented JSON
//! contract, and never prints or logs the token it sends. The server's policies apply.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use patgate::audit::AuditEntry;
use patgate::auth::restrictions::{AllowFrom, Repos};
use patgate::auth::Orgs;
use patgate::store;

use super::{AuditListArgs, ChangeSpec, NewTokenSpec, TokenView, Tokens};

/// The longest one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// A token with its secret, as create and regenerate answer.
#[derive(Debug, Deserialize)]
pub struct WithSecret {
    pub token: TokenView,
    pub secret: String,
}

/// The body of a create.
#[derive(Debug, Serialize)]
pub struct CreateRequest {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub scopes: Vec<String>,
    pub orgs: Orgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repos: Option<Repos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// The body of a rotate; without an expiry, the server's default lifespan from now.
#[derive(Debug, Default, Serialize)]
pub struct RotateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// The body of an update; absent fields stay as they are.
#[derive(Debug, Default, Serialize)]
pub struct UpdateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orgs: Option<Orgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repos: Option<Repos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

#[derive(Deserialize)]
struct ListAnswer {
    tokens: Vec<TokenView>,
    next: Option<String>,
}

/// Which audit entries to read: the query of `GET /admin/v1/audit`, times in RFC 3339.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub owner: Option<String>,
    pub token_id: Option<String>,
    pub outcome: Option<String>,
    pub action: Option<String>,
}

#[derive(Deserialize)]
struct AuditAnswer {
    entries: Vec<AuditEntry>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Count {
    revoked: usize,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// Why an admin call failed. Messages never hold the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin URL `{0}`: use http://HOST:PORT")]
    BadUrl(String),
    #[error("admin URL `{0}`: https is not supported by the CLI yet")]
    HttpsUnsupported(String),
    #[error("the admin token is not usable in an HTTP header")]
    BadToken,
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the admin API at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("the admin API's answer cannot be read: {0}")]
    BadAnswer(String),
}

/// A connection to one patgate's admin API with one token.
pub struct AdminClient {
    base: String,
    bearer: header::HeaderValue,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client of the admin API at `url` (`http://host:port`), authenticating with `token`.
    pub fn new(url: &str, token: &str) -> Result<AdminClient, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(ClientError::HttpsUnsupported(url.to_owned())),
            _ => return Err(ClientError::BadUrl(url.to_owned())),
        }
        if uri.authority().is_none() || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let mut bearer = header::HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| ClientError::BadToken)?;
        bearer.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(AdminClient { base, bearer, http })
    }

    async fn call<T: for<'de> Deserialize<'de>>(&self, method: Method, path: &str, body: Option<String>) -> Result<T, ClientError> {
        let url = format!("{}/admin/v1{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, self.bearer.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| ClientError::BadUrl(self.base.clone()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let work = async {
            let res = self.http.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, work).await.map_err(|_| ClientError::Timeout {
            url: self.base.clone(),
            secs: TIMEOUT.as_secs(),
        })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorAnswer>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Creates a token; the answer holds its secret.
    pub async fn create(&self, req: &CreateRequest) -> Result<WithSecret, ClientError> {
        self.call(Method::POST, "/tokens", Some(json(req))).await
    }

    /// Every token visible to the caller (of `owner`, in `state`), page by page.
    pub async fn list(&self, owner: Option<&str>, state: Option<&str>) -> Result<Vec<TokenView>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![("limit", "1000".to_owned())];
            q.extend(owner.map(|o| ("owner", o.to_owned())));
            q.extend(state.map(|s| ("state", s.to_owned())));
            q.extend(after.take().map(|a| ("after", a)));
            let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            let page: ListAnswer = self.call(Method::GET, &format!("/tokens?{}", query.join("&")), None).await?;
            out.extend(page.tokens);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// At most `limit` audit entries the caller may read, newest first, page by page.
    pub async fn audit(&self, f: &AuditFilter, limit: usize) -> Result<Vec<AuditEntry>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![("limit", (limit - out.len()).min(1000).to_string())];
            let fields = [
                ("from", &f.from),
                ("to", &f.to),
                ("owner", &f.owner),
                ("token_id", &f.token_id),
                ("outcome", &f.outcome),
                ("action", &f.action),
            ];
            q.extend(fields.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
            q.extend(after.take().map(|a| ("after", a)));
            let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            let page: AuditAnswer = self.call(Method::GET, &format!("/audit?{}", query.join("&")), None).await?;
            out.extend(page.entries);
            match page.next {
                Some(n) if out.len() < limit => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// One token.
    pub async fn get(&self, id: &str) -> Result<TokenView, ClientError> {
        self.call(Method::GET, &format!("/tokens/{}", encode(id)), None).await
    }

    /// Changes one token.
    pub async fn update(&self, id: &str, req: &UpdateRequest) -> Result<TokenView, ClientError> {
        self.call(Method::PATCH, &format!("/tokens/{}", encode(id)), Some(json(req))).await
    }

    /// Gives one token a new secret.
    pub async fn regenerate(&self, id: &str) -> Result<WithSecret, ClientError> {
        self.call(Method::POST, &format!("/tokens/{}/regenerate", encode(id)), None).await
    }

    /// Gives one token a new secret and a new expiry.
    pub async fn rotate(&self, id: &str, req: &RotateRequest) -> Result<WithSecret, ClientError> {
        self.call(Method::POST, &format!("/tokens/{}/rotate", encode(id)), Some(json(req)))
            .await
    }

    /// Revokes one token.
    pub async fn revoke(&self, id: &str) -> Result<TokenView, ClientError> {
        self.call(Method::POST, &format!("/tokens/{}/revoke", encode(id)), None).await
    }

    /// Revokes every live token of an owner; returns how many.
    pub async fn revoke_owner(&self, owner: &str) -> Result<usize, ClientError> {
        let c: Count = self.call(Method::POST, &format!("/owners/{}/revoke", encode(owner)), None).await?;
        Ok(c.revoked)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("a request body serializes")
}

/// Percent-encodes everything but unreserved characters, for a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A lifespan as the admin API reads it.
fn lifespan(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Tokens for AdminClient {
    async fn create(&self, new: NewTokenSpec) -> anyhow::Result<(TokenView, String)> {
        let req = CreateRequest {
            name: new.name,
            owner: new.owner,
            scopes: new.scope_names,
            orgs: new.orgs,
            repos: new.repos,
            allow_from: new.allow_from,
            expires_in: new.expires_in.map(lifespan),
        };
        let w = AdminClient::create(self, &req).await?;
        Ok((w.token, w.secret))
    }

    async fn list(&self, owner: Option<String>, state: Option<String>) -> anyhow::Result<Vec<TokenView>> {
        Ok(AdminClient::list(self, owner.as_deref(), state.as_deref()).await?)
    }

    async fn get(&self, id: &str) -> anyhow::Result<TokenView> {
        Ok(AdminClient::get(self, id).await?)
    }

    async fn update(&self, id: &str, change: ChangeSpec) -> anyhow::Result<TokenView> {
        let req = UpdateRequest {
            name: change.name,
            scopes: change.scope_names,
            orgs: change.orgs,
            repos: change.repos,
            allow_from: change.allow_from,
            expires_in: change.expires_in.map(lifespan),
        };
        Ok(AdminClient::update(self, id, &req).await?)
    }

    async fn regenerate(&self, id: &str) -> anyhow::Result<(TokenView, String)> {
        let w = AdminClient::regenerate(self, id).await?;
        Ok((w.token, w.secret))
    }

    async fn rotate(&self, id: &str, expires_in: Option<std::time::Duration>) -> anyhow::Result<(TokenView, String)> {
        let req = RotateRequest {
            expires_in: expires_in.map(lifespan),
        };
        let w = AdminClient::rotate(self, id, &req).await?;
        Ok((w.token, w.secret))
    }

    async fn revoke(&self, id: &str) -> anyhow::Result<()> {
        AdminClient::revoke(self, id).await?;
        Ok(())
    }

    async fn revoke_owner(&self, owner: &str) -> anyhow::Result<usize> {
        Ok(AdminClient::revoke_owner(self, owner).await?)
    }

    async fn audit(&self, a: &AuditListArgs) -> anyhow::Result<Vec<AuditEntry>> {
        let filter = AuditFilter {
            from: a.from.map(store::format_time),
            to: a.to.map(store::format_time),
            owner: a.owner.clone(),
            token_id: a.token_id.clone(),
            outcome: a.outcome.clone(),
            action: a.action.map(|a| a.as_str().to_owned()),
        };
        Ok(AdminClient::audit(self, &filter, a.limit as usize).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("http://127.0.0.1:9090", "t").is_ok());
        assert!(AdminClient::new("http://127.0.0.1:9090/", "t").is_ok());
        assert!(matches!(AdminClient::new("https://h", "t"), Err(ClientError::HttpsUnsupported(_))));
        for bad in ["ftp://h", "127.0.0.1:9090", "http://h/x", "http://h?q", ""] {
            assert!(AdminClient::new(bad, "t").is_err(), "{bad}");
        }
        assert!(matches!(AdminClient::new("http://h", "a\nb"), Err(ClientError::BadToken)));
    }

    #[test]
    fn encoding_keeps_only_unreserved() {
        assert_eq!(encode("a b/c%é"), "a%20b%2Fc%25%C3%A9");
        assert_eq!(encode("Ab-9._~"), "Ab-9._~");
    }
}
