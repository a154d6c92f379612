//! Header rewriting, done once per direction. Upstream requests lose the credential,
//! hop-by-hop headers (and any header that `Connection` names), names with `_` (CGI reads
//! `_` and `-` alike), and every identity or forwarding header a client sent; patgate
//! then sets its own. Responses lose their hop-by-hop headers.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Permit;

/// The token owner, as sent upstream.
pub const X_PATGATE_USER: HeaderName = HeaderName::from_static("x-patgate-user");
/// The token's public id, as sent upstream.
pub const X_PATGATE_TOKEN_ID: HeaderName = HeaderName::from_static("x-patgate-token-id");

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a client may not set for the upstream: patgate alone speaks for identity and
/// origin (every `x-forwarded-*` and `x-patgate-*` too, by prefix), and nothing may make
/// the upstream read another method or path than the rules judged.
const SPOOFABLE: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "remote-user",
    "x-remote-user",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    // httpoxy: `Proxy` would become HTTP_PROXY in a CGI environment.
    "proxy",
];

fn is_removed_from_request(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n)
        || SPOOFABLE.contains(&n)
        || n.starts_with("x-patgate-")
        || n.starts_with("x-forwarded-")
        || n.contains('_')
        || name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::EXPECT
}

/// The names listed in `Connection` headers.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Rewrites a client's request headers for the upstream.
pub fn prepare_upstream(headers: &mut HeaderMap, permit: &Permit, peer: SocketAddr) {
    for name in connection_listed(headers) {
        headers.remove(&name);
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| is_removed_from_request(n)).cloned().collect();
    for name in doomed {
        headers.remove(&name);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a header value"),
    );
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Ok(v) = HeaderValue::from_bytes(permit.owner().as_bytes()) {
        headers.insert(X_PATGATE_USER, v);
    }
    if let Ok(v) = HeaderValue::from_str(permit.token_id()) {
        headers.insert(X_PATGATE_TOKEN_ID, v);
    }
}

/// Removes hop-by-hop headers from an upstream's response.
pub fn prepare_response(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(&name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// True when the client's `Connection` header asks to close the connection after this
/// request.
pub fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_lose_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        prepare_response(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["content-type"]);
    }

    #[test]
    fn request_headers_are_classified() {
        for n in [
            "x-http-method-override",
            "x-original-url",
            "proxy",
            "x-forwarded-user",
            "remote-user",
            "authorization",
            "proxy-authorization",
            "x-patgate-user",
            "x-patgate-token-id",
            "x-patgate-anything",
            "forwarded",
            "x-forwarded-for",
            "x-remote-user",
            "x_forwarded_for",
            "remote_user",
            "expect",
            "te",
            "upgrade",
        ] {
            assert!(is_removed_from_request(&HeaderName::from_static(n)), "{n}");
        }
        for n in [
            "content-type",
            "content-length",
            "git-protocol",
            "user-agent",
            "accept-encoding",
            "host",
        ] {
            assert!(!is_removed_from_request(&HeaderName::from_static(n)), "{n}");
        }
    }
}
