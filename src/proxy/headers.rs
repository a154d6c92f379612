//! Header rewriting, done once per direction. Upstream requests lose the credential,
//! hop-by-hop headers (and any header that `Connection` names), names with `_` (CGI reads
//! `_` and `-` alike), and every identity or forwarding header a client sent; patgate
//! then sets its own. Responses lose their hop-by-hop headers. The one exception is an
//! upgrade ([`is_upgrade`]): its `Upgrade` header and `Connection: upgrade` go through,
//! both ways, and nothing else that `Connection` names.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Permit;

/// The token owner, as sent upstream.
pub const X_PATGATE_USER: HeaderName = HeaderName::from_static("x-patgate-user");
/// The token's public id, as sent upstream.
pub const X_PATGATE_TOKEN_ID: HeaderName = HeaderName::from_static("x-patgate-token-id");

pub(crate) static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
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
    HOP_BY_HOP.contains(name)
        || SPOOFABLE.contains(&n)
        || n.starts_with("x-patgate-")
        || n.starts_with("x-forwarded-")
        || n.contains('_')
        || name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::EXPECT
}

/// The names listed in `Connection` headers, less the hop-by-hop ones that every caller
/// handles anyway (the usual `keep-alive`, and `upgrade`): those are not parsed again.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("upgrade"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// The protocols an upgrade may switch to. Only these: others (`h2c`, `HTTP/2.0`,
/// `TLS/1.2`, `SPDY/3.1`, ...) could carry requests of their own that patgate never judged.
const PASSED_ON: &[&str] = &["websocket"];

/// True when a request asks to switch protocols in a way patgate passes on: `Connection`
/// lists `upgrade`, and every protocol `Upgrade` names may be passed on (`websocket`).
/// Whether it may is up to the version (HTTP/1.1 only) and the server, which the forwarder
/// checks.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    // Asked three times a request (route, forwarder, header rewrite): one lookup for most.
    if !headers.contains_key(header::UPGRADE) {
        return false;
    }
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let offered = upgrade_protocols(headers.get_all(header::UPGRADE).iter());
    asked && !offered.is_empty() && offered.iter().all(|p| PASSED_ON.iter().any(|ok| p.eq_ignore_ascii_case(ok)))
}

/// The protocols named by `Upgrade` values, or none when a value is unreadable.
fn upgrade_protocols<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for v in values {
        let Ok(v) = v.to_str() else { return Vec::new() };
        out.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()));
    }
    out
}

/// Removes what asks for an upgrade, for a request that is not to be upgraded.
pub fn drop_upgrade(headers: &mut HeaderMap) {
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
}

/// True when a 101's `Upgrade` names exactly one protocol, and one that the request
/// offered (`offered`: its `Upgrade` values).
pub fn upgrade_accepted(offered: &[HeaderValue], response: &HeaderMap) -> bool {
    let chosen = upgrade_protocols(response.get_all(header::UPGRADE).iter());
    let offered = upgrade_protocols(offered.iter());
    match chosen.as_slice() {
        [one] => offered.iter().any(|o| o.eq_ignore_ascii_case(one)),
        _ => false,
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An address as a header value (`X-Forwarded-For`), as `Display` writes it. Made once
/// for each connection; an IPv4 address is written without the formatting machinery,
/// which costs more than the rest of this.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an IP address is a header value");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(octet).as_bytes();
        text[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    HeaderValue::from_bytes(&text[..len]).expect("an IP address is a header value")
}

/// Removes every header `doomed` picks, with one pass to find them. The usual request
/// loses one (its credential), the usual response none or one (`Connection`).
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let mut names = headers.keys().filter(|n| doomed(n));
    let Some(first) = names.next().cloned() else { return };
    let rest: Vec<HeaderName> = names.cloned().collect();
    headers.remove(&first);
    for name in rest {
        headers.remove(&name);
    }
}

/// How a request's headers are rewritten for the upstream: which of the client's go on
/// ([`Rewrite::keeps`]) and which patgate adds ([`Rewrite::added`]), applied to the
/// request's header table by [`prepare_upstream`].
pub struct Rewrite {
    upgrade: bool,
    /// What `Connection` names, besides the hop-by-hop headers removed anyway.
    listed: Vec<HeaderName>,
}

impl Rewrite {
    /// The rewrite of a request with these headers.
    pub fn of(headers: &HeaderMap) -> Rewrite {
        let upgrade = is_upgrade(headers);
        let listed = match headers.contains_key(header::CONNECTION) {
            true => connection_listed(headers),
            false => Vec::new(),
        };
        Rewrite { upgrade, listed }
    }

    /// Whether a client's header named `name` goes upstream.
    pub fn keeps(&self, name: &HeaderName) -> bool {
        let removed = is_removed_from_request(name) && !(self.upgrade && *name == header::UPGRADE);
        !removed && !self.listed.contains(name)
    }

    /// The `Host` the client asked for, as `X-Forwarded-Host` tells it (the first, unless
    /// it is not passed on).
    /// An empty `Host` (valid for a target with no authority) is not passed on.
    pub fn forwarded_host<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        headers.get(header::HOST).filter(|h| !h.is_empty() && self.keeps(&header::HOST))
    }

    /// Gives `add` each header patgate sets, in order. No client header of these names
    /// is kept, so each is the only one of its name. The upstream is told the client's
    /// address (`client`, from [`ip_value`]), whether it came over TLS, the `Host` it
    /// asked for (`host`, from [`Rewrite::forwarded_host`]), and who the token is (`identity`).
    pub fn added(
        &self,
        client: &HeaderValue,
        https: bool,
        host: Option<&HeaderValue>,
        identity: &Identity,
        mut add: impl FnMut(HeaderName, &HeaderValue),
    ) {
        if self.upgrade {
            add(header::CONNECTION, &HeaderValue::from_static("upgrade"));
        }
        add(X_FORWARDED_FOR, client);
        add(X_FORWARDED_PROTO, &HeaderValue::from_static(if https { "https" } else { "http" }));
        if let Some(host) = host {
            add(X_FORWARDED_HOST, host);
        }
        if let Some(user) = &identity.user {
            add(X_PATGATE_USER, user);
        }
        if let Some(id) = &identity.token_id {
            add(X_PATGATE_TOKEN_ID, id);
        }
    }
}

/// Who a token is, as header values (`X-Patgate-User`, `X-Patgate-Token-Id`), made from
/// a permit and from nothing else: a value that is not a valid header value (it never is,
/// from the store) is not sent.
pub struct Identity {
    user: Option<HeaderValue>,
    token_id: Option<HeaderValue>,
}

impl Identity {
    /// The identity of `permit`'s token.
    pub fn of(permit: &Permit) -> Identity {
        Identity {
            user: HeaderValue::from_bytes(permit.owner().as_bytes()).ok(),
            token_id: HeaderValue::from_str(permit.token_id()).ok(),
        }
    }
}

/// Rewrites a client's request headers for the upstream, which is told the client's
/// address (`client`, from [`ip_value`]) and whether it came over TLS.
pub fn prepare_upstream(headers: &mut HeaderMap, permit: &Permit, client: &HeaderValue, https: bool) {
    let rewrite = Rewrite::of(headers);
    let host = rewrite.forwarded_host(headers).cloned();
    remove_where(headers, |n| !rewrite.keeps(n));
    strip_session_cookie(headers);
    // Up to six to add, in one growth of the table at most.
    headers.reserve(6);
    rewrite.added(client, https, host.as_ref(), &Identity::of(permit), |name, value| {
        headers.insert(name, value.clone());
    });
}

/// Takes the admin console's session cookie ([`crate::auth::SESSION_COOKIE`]) out of
/// `Cookie`: it is a credential of the admin listener, which a browser also sends to the
/// proxy's port of the same host, and must not reach an upstream. Other cookies pass.
fn strip_session_cookie(headers: &mut HeaderMap) {
    let name = crate::auth::SESSION_COOKIE.as_bytes();
    let carries = |v: &HeaderValue| v.as_bytes().windows(name.len()).any(|w| w == name);
    if !headers.get_all(header::COOKIE).iter().any(carries) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let text = v.to_str().ok()?;
            let pairs: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty() && crate::auth::session_cookie_value(p).is_none())
                .collect();
            (!pairs.is_empty()).then(|| HeaderValue::from_str(&pairs.join("; ")).ok()).flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// Removes hop-by-hop headers from an upstream's response.
pub fn prepare_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        for name in connection_listed(headers) {
            headers.remove(&name);
        }
    }
    remove_where(headers, |n| HOP_BY_HOP.contains(n));
}

/// Removes hop-by-hop headers from an upstream's 101 answer to an upgrade, except its
/// `Upgrade`, and says `Connection: upgrade`.
pub fn prepare_upgrade_response(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(&name);
    }
    remove_where(headers, |n| HOP_BY_HOP.contains(n) && n != header::UPGRADE);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_console_session_cookie_never_goes_upstream() {
        let strip = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
            }
            strip_session_cookie(&mut h);
            h.get_all(header::COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&["a=1; patgate_session=xyz; b=2"]), ["a=1; b=2"]);
        assert_eq!(strip(&["patgate_session=xyz"]), Vec::<String>::new());
        assert_eq!(strip(&["a=1", "patgate_session=x; patgate_session=y"]), ["a=1"]);
        assert_eq!(strip(&[" patgate_session = x ;c=3"]), ["c=3"]);
        // Other cookies, and names that only start alike, pass untouched.
        assert_eq!(strip(&["patgate_session_x=1; a=2"]), ["patgate_session_x=1; a=2"]);
        assert_eq!(strip(&["a=1;b=2"]), ["a=1;b=2"]);
    }

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

    /// A permit for alice, the way the request path gets one.
    pub(crate) fn permit() -> Permit {
        use crate::auth::rules::Requirement;
        use crate::auth::scope::{Scope, ScopeSet};
        use crate::auth::token::TokenSecret;
        use crate::auth::{authenticate, authorize, Orgs};
        use crate::store::token_cache::TokenCache;
        let secret = TokenSecret::generate();
        let cache = TokenCache::default();
        let record = crate::store::TokenRecord {
            repos: Default::default(),
            allow_from: Default::default(),
            rotated_at: None,
            id: "t1".into(),
            hash: secret.hash(),
            name: "ci".into(),
            owner: "alice".into(),
            orgs: Orgs::All,
            scopes: ScopeSet::parse(&["code:read"]).unwrap(),
            created_at: 0,
            expires_at: i64::MAX,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            last_used_from: None,
        };
        cache.apply(&record, 0);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {}", secret.expose()).parse().unwrap());
        let identity = authenticate(&h, &cache, 1, None).unwrap();
        let scope = Scope::from_name("code:read").unwrap();
        authorize(identity, Requirement::scope(scope)).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_host_that_connection_names_is_not_forwarded() {
        let mut h = map(&[("connection", "host"), ("host", "gate.example")]);
        assert_eq!(Rewrite::of(&h).forwarded_host(&h), None);
        prepare_upstream(&mut h, &permit(), &ip_value("10.0.0.1".parse().unwrap()), false);
        assert!(!h.contains_key("host") && !h.contains_key("x-forwarded-host"));
        let h = map(&[("host", "gate.example"), ("host", "other.example")]);
        assert_eq!(Rewrite::of(&h).forwarded_host(&h).unwrap(), "gate.example");
    }

    #[test]
    fn an_identity_is_made_from_the_permit() {
        let identity = Identity::of(&permit());
        assert_eq!(identity.user.as_ref().unwrap(), "alice");
        assert_eq!(identity.token_id.as_ref().unwrap(), "t1");
    }

    #[test]
    fn an_empty_host_is_not_forwarded() {
        let mut h = map(&[("host", "")]);
        prepare_upstream(&mut h, &permit(), &ip_value("10.0.0.1".parse().unwrap()), false);
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn upgrades_are_told_from_what_only_looks_like_one() {
        let yes: &[&[(&str, &str)]] = &[
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            &[("connection", "keep-alive, upgrade"), ("upgrade", "WebSocket")],
        ];
        for h in yes {
            assert!(is_upgrade(&map(h)), "{h:?}");
        }
        let no: &[&[(&str, &str)]] = &[
            &[("upgrade", "websocket")],
            &[("connection", "upgrade")],
            &[("connection", "upgraded"), ("upgrade", "websocket")],
            &[("connection", "upgrade"), ("upgrade", "")],
            // Protocols that carry HTTP requests the rules never judged.
            &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")],
            &[("connection", "upgrade"), ("upgrade", "websocket, h2c")],
            &[("connection", "upgrade"), ("upgrade", "HTTP/2.0")],
            &[("connection", "upgrade"), ("upgrade", "TLS/1.2, HTTP/1.1")],
            &[("connection", "upgrade"), ("upgrade", "H2")],
            &[("connection", "upgrade"), ("upgrade", "/1")],
            // Only WebSocket is passed on: nothing else is known not to carry requests.
            &[("connection", "upgrade"), ("upgrade", "websocket, foo/2")],
            &[("connection", "upgrade"), ("upgrade", "SPDY/3.1")],
            &[("connection", "upgrade"), ("upgrade", "HTTPS/1.1")],
        ];
        for h in no {
            assert!(!is_upgrade(&map(h)), "{h:?}");
        }
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection_and_nothing_connection_names() {
        let mut h = map(&[
            ("connection", "Upgrade, X-Patgate-User, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-patgate-user", "mallory"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("authorization", "Bearer x"),
        ]);
        prepare_upstream(&mut h, &permit(), &ip_value("10.0.0.1".parse().unwrap()), false);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["x-patgate-user"], "alice");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        for gone in ["x-secret", "keep-alive", "te", "authorization"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        // Not an upgrade: both go, as every hop-by-hop header does.
        for pairs in [
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAA"),
            ][..],
            &[("upgrade", "websocket")][..],
        ] {
            let mut h = map(pairs);
            prepare_upstream(&mut h, &permit(), &ip_value("10.0.0.1".parse().unwrap()), false);
            for gone in ["connection", "upgrade", "http2-settings"] {
                assert!(!h.contains_key(gone), "{gone} in {pairs:?}");
            }
        }
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        drop_upgrade(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn a_switch_must_be_to_one_protocol_that_was_offered() {
        let offered = [HeaderValue::from_static("websocket, chat/2")];
        assert!(upgrade_accepted(&offered, &map(&[("upgrade", "WebSocket")])));
        assert!(upgrade_accepted(&offered, &map(&[("upgrade", "chat/2")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "h2c")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "chat/3")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "websocket, chat/2")])));
        assert!(!upgrade_accepted(&offered, &map(&[])));
    }

    #[test]
    fn a_switching_answer_keeps_its_upgrade_only() {
        let mut h = map(&[
            ("connection", "Upgrade, x-internal"),
            ("upgrade", "websocket"),
            ("x-internal", "1"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        prepare_upgrade_response(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!h.contains_key("x-internal") && !h.contains_key("keep-alive"));
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

    proptest::proptest! {
        #[test]
        fn an_address_value_is_what_display_writes(v4: u32, v6: u128) {
            for ip in [IpAddr::from(std::net::Ipv4Addr::from(v4)), IpAddr::from(std::net::Ipv6Addr::from(v6))] {
                let value = ip_value(ip);
                proptest::prop_assert_eq!(value.to_str().unwrap(), ip.to_string());
            }
        }
    }
}
