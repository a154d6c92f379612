//! Audit webhook URLs (`patgate::audit::streams::WebhookTarget`), against the WHATWG URL
//! parser of the `url` crate as the reference: any text is refused or read, never a
//! panic; what patgate reads, the reference reads too, with the same scheme, host and
//! port, so that the address patgate checks and connects to is the one the URL names;
//! and an address patgate finds in the host is the reference's IP host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patgate::audit::streams::WebhookTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = WebhookTarget::parse(text) else {
        return;
    };
    let reference = url::Url::parse(text).unwrap_or_else(|e| panic!("{text:?}: patgate reads it, the reference refuses it: {e}"));
    assert_eq!(reference.scheme() == "https", target.tls, "{text:?}");
    let port = target.authority.port_u16().unwrap_or(if target.tls { 443 } else { 80 });
    assert_eq!(reference.port_or_known_default(), Some(port), "{text:?}");
    let host = target.authority.host().to_ascii_lowercase();
    match (target.address(), reference.host()) {
        (Some(std::net::IpAddr::V4(a)), Some(url::Host::Ipv4(b))) => assert_eq!(a, b, "{text:?}"),
        (Some(std::net::IpAddr::V6(a)), Some(url::Host::Ipv6(b))) => assert_eq!(a, b, "{text:?}"),
        (None, Some(url::Host::Domain(d))) => assert_eq!(d, host.as_str(), "{text:?}"),
        (ours, theirs) => panic!("{text:?}: patgate reads the host as {ours:?}, the reference as {theirs:?}"),
    }
});
