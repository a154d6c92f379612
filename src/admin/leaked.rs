//! Leak reports: `POST /admin/v1/leaked {"secrets": ["patg_..."]}`, for secret scanners
//! (like GitHub's credential revocation API). No token is needed: whoever holds a leaked
//! secret may have it revoked. Reports are limited per client address; strings that are
//! not well-formed patgate tokens are ignored; the answer says only how many were revoked,
//! never which. The ids revoked are logged; the secrets never are.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::request::Parts;
use serde::Deserialize;

use super::error::AdminError;
use super::request::Body;
use super::tokens::Revoked;
use super::AdminState;
use crate::auth::token::TokenSecret;
use crate::guard::client_addr::client_key;

/// The actor recorded for revocations by leak report.
pub const ACTOR: &str = "leak report";

/// Client addresses remembered before idle ones are dropped.
const TRACKED: usize = 10_000;

/// Leak reports allowed per client address; IPv6 clients count by their /64.
pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(per_minute: NonZeroU32) -> Limiter {
        Limiter {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one report from `ip`; how long to wait when there were too many.
    pub fn check(&self, ip: IpAddr) -> Result<(), AdminError> {
        if self.limiter.len() > TRACKED {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| AdminError::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }
}

/// The client's address (unspecified when the request came without a connection, as in
/// tests that call the router directly).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(ClientIp(ip))
    }
}

/// A leak report within the limit of its client address, counted before its body is
/// read: a client over the limit costs no more than its headers.
pub struct Admitted(pub IpAddr);

impl FromRequestParts<AdminState> for Admitted {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.leak_limiter().check(ip)?;
        Ok(Admitted(ip))
    }
}

/// The body of a leak report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    secrets: Vec<String>,
}

/// `POST /admin/v1/leaked`.
pub async fn leaked(State(s): State<AdminState>, Admitted(ip): Admitted, body: Body) -> Result<Json<Revoked>, AdminError> {
    let report: LeakReport = body.parse()?;
    let max = s.config().max_secrets_per_report;
    if report.secrets.len() > max {
        return Err(AdminError::field("secrets", format!("at most {max} in one report")));
    }
    let hashes: HashSet<_> = report
        .secrets
        .iter()
        .filter_map(|t| TokenSecret::parse(t.trim()))
        .map(|t| t.hash())
        .collect();
    // The reporter's address, unless the request came without a connection (tests).
    let actor = crate::audit::Actor {
        name: Some(ACTOR.to_owned()),
        client: Some(ip).filter(|ip| !ip.is_unspecified()),
    };
    let ids = s.store().revoke_hashes(hashes.into_iter().collect(), &actor).await?;
    if !ids.is_empty() {
        s.applied().await;
        let list = ids.join(",");
        tracing::warn!(target: "patgate::admin", count = ids.len(), token.ids = %list, client.ip = %ip, "Tokens revoked by leak report");
    }
    Ok(Json(Revoked { revoked: ids.len() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_limited_per_address_and_ipv6_per_64() {
        let l = Limiter::new(NonZeroU32::new(2).unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        let e = l.check(a).unwrap_err();
        assert!(matches!(e, AdminError::RateLimited { retry_after } if retry_after.as_secs() <= 30));
        assert!(l.check("10.0.0.2".parse().unwrap()).is_ok());
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.check(v6("2001:db8::1")).is_ok() && l.check(v6("2001:db8::2")).is_ok());
        assert!(l.check(v6("2001:db8::ffff:1")).is_err());
        assert!(l.check(v6("2001:db8:0:1::1")).is_ok());
        // An IPv4 client seen through a dual-stack socket counts as itself.
        assert!(l.check(v6("::ffff:10.0.0.1")).is_err());
    }
}
