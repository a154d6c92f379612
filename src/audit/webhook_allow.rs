//! Which addresses audit webhooks may be delivered to (`audit.webhook_allow`): so that
//! whoever holds `auditstreams:manage` cannot make patgate POST to the machine it runs on
//! (its own admin listener, the git server behind it, a database), to a cloud's metadata
//! service, or into a private network it was not meant to reach.
//!
//! Every address falls in one [`AddressClass`]: `external` (globally routed), `private`
//! (RFC 1918, shared address space, unique local IPv6), `loopback`, or special-purpose
//! (link-local with the metadata services, unspecified, multicast, documentation,
//! benchmarking, reserved, and IPv6 forms that embed an IPv4 address). The setting lists
//! classes and address ranges; an address is allowed when its class is listed or a range
//! holds it, so a special-purpose address is reachable only through a range that names
//! it. The default is `["external"]`, as Gitea's webhooks do.
//!
//! The check runs on the addresses a webhook's host resolves to, at each delivery, and
//! the connection goes to the address checked (a name that resolves elsewhere the next
//! time is checked again); a URL naming an address is also checked when the stream is
//! created or changed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Clouds' metadata and platform services outside the link-local range (which holds
/// most of them, 169.254.169.254 first): AWS's IPv6 instance metadata (in fc00::/7),
/// Alibaba's (in 100.64.0.0/10), Azure's WireServer (a public address). Special, so
/// that allowing `private`, or the default `external`, does not open them.
const METADATA: [IpAddr; 3] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
];

/// What kind of address an address is, for `audit.webhook_allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    External,
    Private,
    Loopback,
    /// Link-local, unspecified, multicast, documentation, reserved...: never by class.
    Special,
}

impl AddressClass {
    /// The class of `ip`; an IPv4-mapped IPv6 address is its IPv4 address.
    pub fn of(ip: IpAddr) -> AddressClass {
        let ip = ip.to_canonical();
        if METADATA.contains(&ip) {
            return AddressClass::Special;
        }
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> AddressClass {
        let [a, b, c, _] = ip.octets();
        if ip.is_loopback() {
            AddressClass::Loopback
        } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
            // RFC 1918, and RFC 6598's shared address space (carrier-grade NAT).
            AddressClass::Private
        } else if a == 0
            || ip.is_link_local()
            || ip.is_multicast()
            || a >= 240
            || (a, b, c) == (192, 0, 0)
            || ip.is_documentation()
            || (a == 198 && (b & 0xfe) == 18)
        {
            // This network, link-local (169.254.169.254 is the metadata service of most
            // clouds), multicast, reserved and broadcast, IETF protocol assignments,
            // documentation, benchmarking.
            AddressClass::Special
        } else {
            AddressClass::External
        }
    }

    fn of_v6(ip: Ipv6Addr) -> AddressClass {
        let s = ip.segments();
        if ip.is_loopback() {
            AddressClass::Loopback
        } else if (s[0] & 0xfe00) == 0xfc00 {
            // Unique local (fc00::/7).
            AddressClass::Private
        } else if (s[0] & 0xe000) != 0x2000 || s[0] == 0x2002 || (s[0], s[1]) == (0x2001, 0) || (s[0], s[1]) == (0x2001, 0xdb8) {
            // Outside global unicast (2000::/3): unspecified, IPv4-compatible, NAT64,
            // discard, link-local and site-local, multicast; and inside it, 6to4 and
            // Teredo (which embed an IPv4 address) and documentation.
            AddressClass::Special
        } else {
            AddressClass::External
        }
    }

    fn name(self) -> &'static str {
        match self {
            AddressClass::External => "an external",
            AddressClass::Private => "a private",
            AddressClass::Loopback => "a loopback",
            AddressClass::Special => "a special-purpose (link-local, cloud metadata, multicast, reserved...)",
        }
    }
}

/// `audit.webhook_allow`, read: the classes listed, and the ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAllow {
    external: bool,
    private: bool,
    loopback: bool,
    ranges: Vec<IpNet>,
}

impl Default for WebhookAllow {
    /// External addresses only.
    fn default() -> Self {
        WebhookAllow {
            external: true,
            private: false,
            loopback: false,
            ranges: Vec::new(),
        }
    }
}

/// An entry of `audit.webhook_allow` that is neither a class nor a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}`: use external, private, loopback or an address range such as 10.1.0.0/16{hint}")]
pub struct BadEntry {
    /// Its place in the list.
    pub index: usize,
    pub entry: String,
    hint: String,
}

/// An address `audit.webhook_allow` does not let a webhook reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is {} address, which audit.webhook_allow does not allow", .class.name())]
pub struct NotAllowed {
    pub ip: IpAddr,
    pub class: AddressClass,
}

impl WebhookAllow {
    /// The names of the classes, as the setting takes them.
    pub const CLASSES: [&'static str; 3] = ["external", "private", "loopback"];

    /// Reads the setting's entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<WebhookAllow, BadEntry> {
        let mut allow = WebhookAllow {
            external: false,
            ..WebhookAllow::default()
        };
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            match entry {
                "external" => allow.external = true,
                "private" => allow.private = true,
                "loopback" => allow.loopback = true,
                range => {
                    let net: IpNet = range.parse().map_err(|_| BadEntry {
                        index,
                        entry: range.to_owned(),
                        hint: String::new(),
                    })?;
                    if net.trunc() != net {
                        return Err(BadEntry {
                            index,
                            entry: range.to_owned(),
                            hint: format!(" (host bits set: did you mean {}?)", net.trunc()),
                        });
                    }
                    allow.ranges.push(net);
                }
            }
        }
        Ok(allow)
    }

    /// Whether a webhook may be delivered to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), NotAllowed> {
        let class = AddressClass::of(ip);
        let by_class = match class {
            AddressClass::External => self.external,
            AddressClass::Private => self.private,
            AddressClass::Loopback => self.loopback,
            AddressClass::Special => false,
        };
        // Ranges see the address as it is reached: ::ffff:127.0.0.1 is 127.0.0.1, which
        // `::/0` does not hold.
        let canonical = ip.to_canonical();
        if by_class || self.ranges.iter().any(|r| r.contains(&canonical)) {
            Ok(())
        } else {
            Err(NotAllowed { ip, class })
        }
    }
}

impl fmt::Display for WebhookAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes = [(self.external, "external"), (self.private, "private"), (self.loopback, "loopback")];
        let mut parts: Vec<String> = classes.iter().filter(|(on, _)| *on).map(|(_, n)| (*n).to_owned()).collect();
        parts.extend(self.ranges.iter().map(IpNet::to_string));
        write!(f, "[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    #[test]
    fn every_address_has_its_class() {
        let table = [
            ("8.8.8.8", External),
            ("1.1.1.1", External),
            ("2606:4700:4700::1111", External),
            ("127.0.0.1", Loopback),
            ("127.8.9.10", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("100.127.255.255", Private),
            ("fd12:3456::1", Private),
            ("::ffff:10.0.0.1", Private),
            ("172.32.0.1", External),
            ("100.128.0.1", External),
            ("169.254.169.254", Special),
            ("::ffff:169.254.169.254", Special),
            ("fe80::1", Special),
            ("0.0.0.0", Special),
            ("0.1.2.3", Special),
            ("::", Special),
            ("224.0.0.1", Special),
            ("ff02::1", Special),
            ("255.255.255.255", Special),
            ("240.0.0.1", Special),
            ("192.0.0.8", Special),
            ("192.0.2.1", Special),
            ("198.18.0.1", Special),
            ("198.19.255.255", Special),
            ("198.20.0.1", External),
            ("2001:db8::1", Special),
            ("2002:7f00:1::", Special),
            ("2001::1", Special),
            ("64:ff9b::7f00:1", Special),
            ("::127.0.0.1", Special),
            ("fec0::1", Special),
            ("fd00:ec2::254", Special),
            ("fd00:ec2::253", Private),
            ("100.100.100.200", Special),
            ("::ffff:100.100.100.200", Special),
            ("168.63.129.16", Special),
        ];
        for (ip, class) in table {
            assert_eq!(AddressClass::of(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn the_default_reaches_external_addresses_only() {
        let d = WebhookAllow::default();
        assert!(d.check("8.8.8.8".parse().unwrap()).is_ok());
        for ip in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1"] {
            assert!(d.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert_eq!(
            d.check("127.0.0.1".parse().unwrap()).unwrap_err().to_string(),
            "127.0.0.1 is a loopback address, which audit.webhook_allow does not allow"
        );
        assert_eq!(WebhookAllow::parse(&["external"]).unwrap(), d);
        assert_eq!(d.to_string(), "[external]");
    }

    #[test]
    fn classes_and_ranges_widen_it() {
        let a = WebhookAllow::parse(&["private", "loopback", "169.254.169.254/32", "2001:db8::/32"]).unwrap();
        for ip in [
            "10.0.0.1",
            "::1",
            "127.0.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "2001:db8::5",
        ] {
            assert!(a.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        for ip in ["8.8.8.8", "169.254.1.1", "fe80::1"] {
            assert!(a.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        let wide = WebhookAllow::parse(&["external", "::/0"]).unwrap();
        for ip in ["::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1"] {
            assert!(
                wide.check(ip.parse().unwrap()).is_err(),
                "{ip} is reached as IPv4, which ::/0 does not hold"
            );
        }
        assert!(wide.check("fd00::1".parse().unwrap()).is_ok());
        let none = WebhookAllow::parse::<&str>(&[]).unwrap();
        assert!(none.check("8.8.8.8".parse().unwrap()).is_err(), "an empty list reaches nothing");
    }

    /// The classes as a table of ranges (IANA's special-purpose registries), first match
    /// wins: the reference the bit tests above are checked against.
    fn reference(ip: IpAddr) -> AddressClass {
        const TABLE: &[(&str, AddressClass)] = &[
            ("fd00:ec2::254/128", Special),
            ("100.100.100.200/32", Special),
            ("168.63.129.16/32", Special),
            ("127.0.0.0/8", Loopback),
            ("10.0.0.0/8", Private),
            ("172.16.0.0/12", Private),
            ("192.168.0.0/16", Private),
            ("100.64.0.0/10", Private),
            ("0.0.0.0/8", Special),
            ("169.254.0.0/16", Special),
            ("224.0.0.0/4", Special),
            ("240.0.0.0/4", Special),
            ("192.0.0.0/24", Special),
            ("192.0.2.0/24", Special),
            ("198.51.100.0/24", Special),
            ("203.0.113.0/24", Special),
            ("198.18.0.0/15", Special),
            ("0.0.0.0/0", External),
            ("::1/128", Loopback),
            ("fc00::/7", Private),
            ("2002::/16", Special),
            ("2001::/32", Special),
            ("2001:db8::/32", Special),
            ("2000::/3", External),
            ("::/0", Special),
        ];
        let ip = ip.to_canonical();
        TABLE
            .iter()
            .find(|(net, _)| net.parse::<IpNet>().unwrap().contains(&ip))
            .map(|(_, class)| *class)
            .unwrap()
    }

    /// Addresses near the edges of the ranges: a prefix of the table's, then anything.
    fn address() -> impl proptest::strategy::Strategy<Value = IpAddr> {
        use proptest::prelude::*;
        let v4 = (
            prop::sample::select(vec![0u32, 10, 100, 127, 169, 172, 192, 198, 203, 223, 224, 240, 255]),
            any::<u32>(),
        )
            .prop_map(|(top, rest)| IpAddr::V4(Ipv4Addr::from((top << 24) | (rest >> 8))));
        let v6 = (
            prop::sample::select(vec![
                0u16, 0x0064, 0x0100, 0x2001, 0x2002, 0x2400, 0x3fff, 0x4000, 0xfc00, 0xfd00, 0xfe80, 0xfec0, 0xff00,
            ]),
            any::<u128>(),
        )
            .prop_map(|(top, rest)| IpAddr::V6(Ipv6Addr::from((u128::from(top) << 112) | (rest >> 16))));
        let mapped = any::<u32>().prop_map(|v4| IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped()));
        prop_oneof![v4, v6, mapped, any::<IpAddr>()]
    }

    proptest::proptest! {
        #[test]
        fn the_class_agrees_with_the_table(ip in address()) {
            proptest::prop_assert_eq!(AddressClass::of(ip), reference(ip), "{}", ip);
        }
    }

    #[test]
    fn a_bad_entry_is_named_with_its_place() {
        let e = WebhookAllow::parse(&["external", "intranet"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert_eq!(
            e.to_string(),
            "`intranet`: use external, private, loopback or an address range such as 10.1.0.0/16"
        );
        let e = WebhookAllow::parse(&["10.1.2.3/8"]).unwrap_err();
        assert!(e.to_string().ends_with("(host bits set: did you mean 10.0.0.0/8?)"), "{e}");
        assert!(WebhookAllow::parse(&["10.1.2.3"]).is_err(), "a range, with its length");
    }
}
