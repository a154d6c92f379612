//! Guards that the proxy and the admin listener share, each held to its own limit, none
//! of them knowing about tokens: who the client is behind trusted proxies
//! ([`client_addr`]), failed authentications per address ([`lockout`]), the minimum rate
//! of a request body ([`body_rate`]), and connections per address ([`connections`]).
//! They sit below the request path and the admin API and import neither.

pub mod body_rate;
pub mod client_addr;
pub mod connections;
pub mod lockout;
