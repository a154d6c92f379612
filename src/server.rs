//! Where connections come in: the proxy's listeners ([`accept`]: connection limits, the
//! TLS handshake, HTTP/2 or patgate's own HTTP/1, idle close) and the TLS configuration
//! both listeners share ([`tls`]). It hands each request to [`crate::proxy`]; nothing
//! below imports it.

pub mod accept;
pub mod tls;
