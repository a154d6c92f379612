//! What a valid `Host` (HTTP/1) or `:authority` (HTTP/2) is: `uri-host [":" port]` of
//! RFC 3986 §3.2.2, with no userinfo (RFC 9110 §4.2.4 deprecates it, RFC 9112 §3.2 asks a
//! server to refuse what is not valid). The one rule both protocols are judged by, and the
//! only text `X-Forwarded-Host` is ever made from.
//!
//! Pure: no I/O, no allocation; fuzzed with the request head (`fuzz/fuzz_targets/http1_head.rs`).

/// Why a `Host` value, or an authority, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request has no Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Repeated,
    #[error("the Host header holds a user or password")]
    Userinfo,
    #[error("the Host header is not a valid host")]
    Invalid,
    #[error("the Host header's port is not a number from 0 to 65535")]
    Port,
    #[error("the Host header and the request's authority differ")]
    Differs,
}

/// Checks `value` as `uri-host [":" port]`. An empty value is valid (RFC 9112 §3.2: a
/// request whose target has no authority may send `Host:` empty); the caller decides
/// whether it forwards one.
pub fn check(value: &[u8]) -> Result<(), HostError> {
    if value.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (host, port) = match value.first() {
        Some(b'[') => {
            let end = value.iter().position(|&b| b == b']').ok_or(HostError::Invalid)?;
            let literal = &value[1..end];
            if !ip_literal(literal) {
                return Err(HostError::Invalid);
            }
            match &value[end + 1..] {
                [] => (&value[..=end], None),
                [b':', port @ ..] => (&value[..=end], Some(port)),
                _ => return Err(HostError::Invalid),
            }
        }
        _ => match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        },
    };
    if host.first() != Some(&b'[') && !host.iter().all(|&b| reg_name(b)) {
        return Err(HostError::Invalid);
    }
    if let Some(port) = port {
        // `port = *DIGIT`: empty is allowed, as are leading zeros, but not a value over 65535.
        if !port.iter().all(u8::is_ascii_digit) {
            return Err(HostError::Invalid);
        }
        let n = port.iter().try_fold(0u32, |n, &d| {
            let n = n * 10 + u32::from(d - b'0');
            (n <= 65535).then_some(n)
        });
        if n.is_none() {
            return Err(HostError::Port);
        }
    }
    Ok(())
}

/// `unreserved / pct-encoded / sub-delims` (a `%` is let through as the start of an
/// encoding, its digits being unreserved themselves).
fn reg_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)
}

/// The inside of `[...]`: an IPv6 address, or an `IPvFuture` (`v1.x`).
fn ip_literal(inside: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(inside) else { return false };
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let mut rest = text.strip_prefix(['v', 'V']).unwrap_or("").splitn(2, '.');
    let (Some(version), Some(tail)) = (rest.next(), rest.next()) else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_hexdigit())
        && !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_judged_as_rfc_3986_writes_them() {
        for ok in [
            "example.com",
            "example.com:443",
            "EXAMPLE.com:0",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:65535",
            "[v1.fe80::a+en1]",
            "",
            "host:",
            "a%20b",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("u:p@evil.example", HostError::Userinfo),
            ("@evil", HostError::Userinfo),
            ("ex ample", HostError::Invalid),
            ("a/b", HostError::Invalid),
            ("a\\b", HostError::Invalid),
            ("x.example:99999", HostError::Port),
            ("x.example:65536", HostError::Port),
            ("x.example:1:2", HostError::Invalid),
            ("x.example:+1", HostError::Invalid),
            ("[::1", HostError::Invalid),
            ("[::1]x", HostError::Invalid),
            ("[not-ip]", HostError::Invalid),
            ("[::1]:99999", HostError::Port),
            ("a\tb", HostError::Invalid),
            ("a?b", HostError::Invalid),
            ("a#b", HostError::Invalid),
            ("é.example", HostError::Invalid),
        ] {
            assert_eq!(check(bad.as_bytes()), Err(why), "{bad:?}");
        }
    }
}
