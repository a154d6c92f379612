//! Which address a request came from, when patgate may stand behind proxies of its own.
//!
//! This module owns the list of trusted proxies and the one rule that reads
//! `X-Forwarded-For`. It does not rewrite headers (that is [`crate::proxy::headers`]) and does not
//! decide what the address is used for (logs, the lockout).
//!
//! # The rule
//! A client may write anything into `X-Forwarded-For`; a proxy appends, on the right, the
//! address it received the request from. So only the entries that trusted proxies appended
//! mean anything, and they are the rightmost ones.
//! - The TCP peer is not a trusted proxy: the peer is the client, and the headers are not
//!   read at all. With no trusted proxies (the default), every peer is the client.
//! - The peer is a trusted proxy: the entries of every `X-Forwarded-For` line, the last
//!   line first and each line from the right, are read until the first address that is not
//!   a trusted proxy, which is the client. Entries that are trusted proxies are skipped:
//!   they are the hops of a chain of proxies.
//! - A malformed entry (not a bare IP address: empty, `unknown`, with a port, with a zone,
//!   not ASCII, longer than any address) ends the walk, and the client is the last trusted
//!   address read (the peer, if the malformed entry is the rightmost). Every entry to its
//!   right was a trusted proxy, so the malformed entry is the one the nearest trusted proxy
//!   wrote for its own peer: we cannot know that peer and must not guess it from further
//!   left, where the client writes. The request is attributed to that proxy instead.
//! - At most [`MAX_HOPS`] entries are read; past them the last trusted address read is the
//!   client. Each entry costs at most a few dozen bytes of parsing, however long the
//!   header, and nothing is allocated.
//! - If every entry is a trusted proxy, or there is no `X-Forwarded-For`, the client is
//!   the leftmost trusted address read (the request came from a trusted host itself).
//! - Addresses are returned in canonical form: an IPv4-mapped IPv6 address
//!   (`::ffff:a.b.c.d`) is returned, and matched against the list, as its IPv4 address.
//!
//! A client *inside* a trusted range can name any address it likes, as with any skip-the-
//! trusted rule (nginx's `real_ip_recursive`): list the proxies, not the networks of
//! clients. The `Forwarded` header (RFC 7239) is not read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};

/// The header proxies append the address of their peer to.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The most `X-Forwarded-For` entries read for one request.
pub const MAX_HOPS: usize = 32;

/// The most entries a trusted-proxy list may have.
pub const MAX_ENTRIES: usize = 1024;

/// The longest text form of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_ADDRESS_LEN: usize = 45;

/// The addresses of the proxies whose `X-Forwarded-For` entries are believed. The default
/// trusts nobody.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    v4: Vec<Net<u32>>,
    v6: Vec<Net<u128>>,
}

/// A network: the address with the host bits cleared, and the mask of the prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Net<T> {
    addr: T,
    mask: T,
}

impl Net<u32> {
    fn new(addr: Ipv4Addr, len: u8) -> Result<Self, Reason> {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let addr = u32::from(addr);
        if addr & !mask != 0 {
            return Err(Reason::HostBitsSet {
                network: format!("{}/{len}", Ipv4Addr::from(addr & mask)),
            });
        }
        Ok(Net { addr, mask })
    }

    fn contains(&self, ip: u32) -> bool {
        ip & self.mask == self.addr
    }
}

impl Net<u128> {
    fn new(addr: Ipv6Addr, len: u8) -> Result<Self, Reason> {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        let addr = u128::from(addr);
        if addr & !mask != 0 {
            return Err(Reason::HostBitsSet {
                network: format!("{}/{len}", Ipv6Addr::from(addr & mask)),
            });
        }
        Ok(Net { addr, mask })
    }

    fn contains(&self, ip: u128) -> bool {
        ip & self.mask == self.addr
    }
}

/// A trusted-proxy entry that could not be read. Its Display is one line naming the entry;
/// [`index`](Self::index) says which one, for a message that names the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {reason}")]
pub struct TrustedProxyError {
    /// The entry's place in the list, from 0.
    pub index: usize,
    /// The entry as given.
    pub entry: String,
    pub reason: Reason,
}

/// Why a trusted-proxy entry is not an IP address or CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("not an IP address (give one like 10.0.0.1 or fd00::1, or a network like 10.0.0.0/8)")]
    NotAnAddress,
    #[error("the prefix length after / is not a number")]
    PrefixLengthNotANumber,
    #[error("the prefix length is above {max}")]
    PrefixTooLong { max: u8 },
    #[error("the address has bits set past the prefix; the network is {network}")]
    HostBitsSet { network: String },
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
}

impl TrustedProxies {
    /// Reads a list of IP addresses (`127.0.0.1`, `::1`) and CIDR networks (`10.0.0.0/8`,
    /// `fd00::/8`); surrounding spaces are ignored. A network whose address has bits set
    /// past its prefix (`10.0.0.1/8`) is refused, as a likely mistake. An empty list
    /// trusts nobody.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, TrustedProxyError> {
        let mut trusted = TrustedProxies::default();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref();
            let fail = |reason| TrustedProxyError {
                index,
                entry: entry.to_owned(),
                reason,
            };
            if index >= MAX_ENTRIES {
                return Err(fail(Reason::TooManyEntries));
            }
            match parse_entry(entry.trim()).map_err(fail)? {
                Parsed::V4(net) => trusted.v4.push(net),
                Parsed::V6(net) => trusted.v6.push(net),
            }
        }
        Ok(trusted)
    }

    /// True when nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// True when `ip` (in canonical form) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let ip = u32::from(v4);
                self.v4.iter().any(|n| n.contains(ip))
            }
            IpAddr::V6(v6) => {
                let ip = u128::from(v6);
                self.v6.iter().any(|n| n.contains(ip))
            }
        }
    }

    /// The client's address: `peer` unless `peer` is a trusted proxy, in which case the
    /// address `X-Forwarded-For` gives by the rule of this module. Returned in canonical
    /// form. Reads no header when nobody is trusted.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut nearest_trusted = peer;
        let mut hops = 0;
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            for entry in line.as_bytes().rsplit(|&b| b == b',') {
                hops += 1;
                if hops > MAX_HOPS {
                    return nearest_trusted;
                }
                let Some(ip) = parse_hop(entry) else {
                    return nearest_trusted;
                };
                if !self.contains(ip) {
                    return ip;
                }
                nearest_trusted = ip;
            }
        }
        nearest_trusted
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Cidr(IpAddr, u32);
        impl fmt::Debug for Cidr {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.0, self.1)
            }
        }
        let v4 = self.v4.iter().map(|n| Cidr(Ipv4Addr::from(n.addr).into(), n.mask.count_ones()));
        let v6 = self.v6.iter().map(|n| Cidr(Ipv6Addr::from(n.addr).into(), n.mask.count_ones()));
        f.debug_tuple("TrustedProxies").field(&v4.chain(v6).collect::<Vec<_>>()).finish()
    }
}

enum Parsed {
    V4(Net<u32>),
    V6(Net<u128>),
}

fn parse_entry(entry: &str) -> Result<Parsed, Reason> {
    let (addr, len) = match entry.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| Reason::NotAnAddress)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        // Digits only: `u8::from_str` would also take a sign.
        Some(len) if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) => {
            let len: u8 = len.parse().map_err(|_| Reason::PrefixLengthNotANumber)?;
            if len > max {
                return Err(Reason::PrefixTooLong { max });
            }
            len
        }
        Some(_) => return Err(Reason::PrefixLengthNotANumber),
    };
    match addr {
        IpAddr::V4(v4) => Net::<u32>::new(v4, len).map(Parsed::V4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // Peers are matched in canonical form, so a mapped network is an IPv4 one.
            Some(v4) if len >= 96 => Net::<u32>::new(v4, len - 96).map(Parsed::V4),
            _ => Net::<u128>::new(v6, len).map(Parsed::V6),
        },
    }
}

/// One `X-Forwarded-For` entry as a bare address, or `None` if it is anything else.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let entry = trim_ows(entry);
    if entry.is_empty() || entry.len() > MAX_ADDRESS_LEN {
        return None;
    }
    let text = std::str::from_utf8(entry).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Without the spaces and tabs around it.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The key one client is counted under, wherever clients are counted (connections, failed
/// authentications, leak reports): IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by its
/// `/64`, which one client gets as cheaply as one address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        h
    }

    #[test]
    fn parses_addresses_and_networks() {
        let t = trusted(&[
            "10.0.0.0/8",
            "127.0.0.1",
            "::1",
            "fd00::/8",
            " 192.0.2.0/24 ",
            "0.0.0.0/0",
            "::ffff:198.51.100.0/120",
        ]);
        for yes in [
            "10.1.2.3",
            "127.0.0.1",
            "::1",
            "fd12::1",
            "192.0.2.255",
            "203.0.113.1",
            "198.51.100.9",
            "::ffff:10.0.0.1",
        ] {
            assert!(t.contains(ip(yes)), "{yes}");
        }
        for no in ["::2", "fe00::1", "2001:db8::1"] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        let t = trusted(&["10.0.0.0/8", "::1"]);
        for no in ["11.0.0.0", "127.0.0.1", "::"] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        assert_eq!(format!("{t:?}"), "TrustedProxies([10.0.0.0/8, ::1/128])");
        assert!(TrustedProxies::parse::<String>(&[]).unwrap().is_empty());
        assert!(TrustedProxies::default().is_empty());
        // As the config hands it over.
        assert!(TrustedProxies::parse(&["10.0.0.0/8".to_string()]).is_ok());
    }

    #[test]
    fn bad_entries_are_named_with_a_reason() {
        const NOT: &str = "not an IP address (give one like 10.0.0.1 or fd00::1, or a network like 10.0.0.0/8)";
        let not = |entry: &str| format!("{entry:?}: {NOT}");
        let cases: Vec<(&str, String)> = vec![
            ("", not("")),
            ("10.0.0", not("10.0.0")),
            ("example.com", not("example.com")),
            ("fe80::1%eth0", not("fe80::1%eth0")),
            ("10.0.0.0/", "\"10.0.0.0/\": the prefix length after / is not a number".to_string()),
            (
                "10.0.0.0/+8",
                "\"10.0.0.0/+8\": the prefix length after / is not a number".to_string(),
            ),
            (
                "10.0.0.0/8/8",
                "\"10.0.0.0/8/8\": the prefix length after / is not a number".to_string(),
            ),
            (
                "10.0.0.0/0008",
                "\"10.0.0.0/0008\": the prefix length after / is not a number".to_string(),
            ),
            ("10.0.0.0/33", "\"10.0.0.0/33\": the prefix length is above 32".to_string()),
            ("::/129", "\"::/129\": the prefix length is above 128".to_string()),
            (
                "10.0.0.1/8",
                "\"10.0.0.1/8\": the address has bits set past the prefix; the network is 10.0.0.0/8".to_string(),
            ),
            (
                "fd00::1/8",
                "\"fd00::1/8\": the address has bits set past the prefix; the network is fd00::/8".to_string(),
            ),
            ("a\nb", not("a\nb")),
        ];
        for (entry, message) in cases {
            let e = TrustedProxies::parse(&["127.0.0.1", entry]).unwrap_err();
            assert_eq!(e.index, 1, "{entry}");
            assert_eq!(e.entry, entry);
            assert_eq!(e.to_string(), message);
            assert!(!e.to_string().contains('\n'));
        }
        let many = vec!["127.0.0.1"; MAX_ENTRIES + 1];
        let e = TrustedProxies::parse(&many).unwrap_err();
        assert_eq!((e.index, e.reason), (MAX_ENTRIES, Reason::TooManyEntries));
        assert!(TrustedProxies::parse(&many[..MAX_ENTRIES]).is_ok());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = xff(&["203.0.113.5"]);
        assert_eq!(trusted(&[]).client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(trusted(&["10.0.0.0/8"]).client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(trusted(&[]).client_ip(ip("::ffff:198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.2");
        let cases: &[(&[&str], &str)] = &[
            // No header: the request came from the proxy itself.
            (&[], "10.0.0.2"),
            (&["203.0.113.5"], "203.0.113.5"),
            // The client's own entries, left of what the proxy appended, are not believed.
            (&["1.1.1.1, 203.0.113.5"], "203.0.113.5"),
            (&["1.1.1.1", "203.0.113.5"], "203.0.113.5"),
            // A chain of proxies.
            (&["1.1.1.1, 203.0.113.5, 10.0.0.9, fd00::3"], "203.0.113.5"),
            (&["1.1.1.1, 203.0.113.5", "10.0.0.9", "fd00::3"], "203.0.113.5"),
            // Spaces and tabs around entries.
            (&["1.1.1.1 ,\t203.0.113.5\t,  10.0.0.9 "], "203.0.113.5"),
            (&["2001:db8::7"], "2001:db8::7"),
            (&["::ffff:203.0.113.5"], "203.0.113.5"),
            // Every entry trusted: the leftmost.
            (&["10.0.0.7, 10.0.0.8"], "10.0.0.7"),
            // Malformed entries end the walk at the last trusted address.
            (&["garbage"], "10.0.0.2"),
            (&[""], "10.0.0.2"),
            (&["203.0.113.5,"], "10.0.0.2"),
            (&["unknown, 10.0.0.9"], "10.0.0.9"),
            (&["1.1.1.1, 203.0.113.5:443, 10.0.0.9"], "10.0.0.9"),
            (&["1.1.1.1, [2001:db8::1], 10.0.0.9"], "10.0.0.9"),
            (&["1.1.1.1, 203.0.113.5 10.0.0.9"], "10.0.0.2"),
            (&["203.0.113.5", "x", "10.0.0.9"], "10.0.0.9"),
        ];
        for (lines, want) in cases {
            assert_eq!(t.client_ip(peer, &xff(lines)), ip(want), "{lines:?}");
        }
    }

    #[test]
    fn non_ascii_entries_are_malformed() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.5, 1.2.3.4\xff, 10.0.0.9").unwrap(),
        );
        assert_eq!(t.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn reads_at_most_max_hops_entries() {
        let t = trusted(&["10.0.0.0/8"]);
        let hops = |n: usize| {
            let mut v = vec!["203.0.113.5".to_string()];
            v.extend((0..n).map(|i| format!("10.0.0.{}", i + 1)));
            v.join(", ")
        };
        let peer = ip("10.9.9.9");
        assert_eq!(t.client_ip(peer, &xff(&[&hops(MAX_HOPS - 1)])), ip("203.0.113.5"));
        assert_eq!(t.client_ip(peer, &xff(&[&hops(MAX_HOPS)])), ip("10.0.0.1"));
        // A long hostile header is cut short, and so are many lines.
        let long = format!("203.0.113.5{}", ", 10.0.0.1".repeat(10_000));
        assert_eq!(t.client_ip(peer, &xff(&[&long, "10.0.0.2"])), ip("10.0.0.1"));
        let lines: Vec<&str> = std::iter::repeat_n("10.0.0.3", 1000).collect();
        assert_eq!(t.client_ip(peer, &xff(&lines)), ip("10.0.0.3"));
    }

    proptest! {
        /// Whatever a client writes, a trusted proxy's appended entry is what counts.
        #[test]
        fn a_client_cannot_choose_its_address(
            sent in prop::collection::vec("[ -~]{0,60}", 0..4),
            client in any::<u32>().prop_filter("untrusted", |n| n >> 24 != 10),
            own_line in any::<bool>(),
        ) {
            let t = trusted(&["10.0.0.0/8"]);
            let client = IpAddr::V4(Ipv4Addr::from(client));
            let mut lines: Vec<String> = sent;
            if own_line || lines.is_empty() {
                lines.push(client.to_string());
            } else {
                let last = lines.last_mut().unwrap();
                *last = format!("{last}, {client}");
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            prop_assert_eq!(t.client_ip(ip("10.1.1.1"), &xff(&refs)), client);
        }

        /// The answer is the peer or an address some entry names, never anything else, and
        /// reading any header does not panic.
        #[test]
        fn answers_the_peer_or_a_named_address(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("field byte", |b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)), 0..80), 0..4),
            peer_trusted in any::<bool>(),
        ) {
            let t = trusted(&["10.0.0.0/8", "::1"]);
            let peer = if peer_trusted { ip("10.0.0.1") } else { ip("192.0.2.1") };
            let mut h = HeaderMap::new();
            for l in &lines {
                h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(l).unwrap());
            }
            let got = t.client_ip(peer, &h);
            let named = lines.iter().flat_map(|l| l.split(|&b| b == b',')).filter_map(parse_hop).any(|a| a == got);
            prop_assert!(got == peer || (peer_trusted && named));
        }

        #[test]
        fn parse_never_panics(entry in "\\PC{0,50}") {
            let _ = TrustedProxies::parse(&[entry]);
        }

        #[test]
        fn a_network_contains_exactly_its_prefix(a in any::<u32>(), b in any::<u32>(), len in 0u8..=32) {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let net = format!("{}/{len}", Ipv4Addr::from(a & mask));
            let t = TrustedProxies::parse(&[net]).unwrap();
            prop_assert_eq!(t.contains(IpAddr::V4(Ipv4Addr::from(b))), a & mask == b & mask);
        }
    }
}
