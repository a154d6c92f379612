//! Connections open per client address, an IPv6 /64 counting as one address: each
//! listener (the proxy's, the admin API's) keeps a table and refuses the connection past
//! its limit with a one-line 503.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::client_addr::client_key;

/// The answer to a connection past its address's limit.
pub const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
connection: close\r\ncontent-length: 39\r\n\r\ntoo many connections from this address\n";

/// Answers a connection refused for its address's count with a one-line 503, and closes.
pub async fn refuse_too_many(mut tcp: TcpStream) {
    let _ = tcp.write_all(TOO_MANY).await;
}

/// A connection's place under the limits: its permit under the listener's connection
/// limit, and its count under its address's. Released when the last holder drops: the
/// connection, then a tunnel it turned into.
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _address: Option<AddressGuard>,
}

impl ConnectionSlot {
    /// The place of a connection holding `permit` and counted under `address`.
    pub fn new(permit: OwnedSemaphorePermit, address: Option<AddressGuard>) -> std::sync::Arc<ConnectionSlot> {
        std::sync::Arc::new(ConnectionSlot {
            _permit: permit,
            _address: address,
        })
    }
}

/// Connections open per client address, an IPv6 /64 counting as one address: the
/// proxy's listeners and the admin listener each keep one.
#[derive(Debug)]
pub struct PerAddress {
    open: DashMap<IpAddr, usize>,
    max: usize,
}

impl PerAddress {
    /// At most `max` connections from one address.
    pub fn new(max: usize) -> Self {
        PerAddress { open: DashMap::new(), max }
    }

    /// Counts one more connection from `ip`, or None when its address is at the limit.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressGuard> {
        let key = client_key(ip);
        let mut n = self.open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(AddressGuard { table: self.clone(), key })
    }

    /// Connections open from `ip`'s address or /64.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.open.get(&client_key(ip)).map_or(0, |n| *n)
    }
}

/// One connection counted against its address; uncounted when dropped.
#[derive(Debug)]
pub struct AddressGuard {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        self.table.open.remove_if_mut(&self.key, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_too_many_answer_is_well_framed() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
    }

    #[test]
    fn connections_are_counted_per_address_and_per_ipv6_slash_64() {
        let t = Arc::new(PerAddress::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let g1 = t.enter(a).unwrap();
        let g2 = t.enter(a).unwrap();
        assert!(t.enter(a).is_none());
        assert!(t.enter("192.0.2.2".parse().unwrap()).is_some());
        drop(g1);
        assert_eq!(t.count(a), 1);
        let g3 = t.enter(a).unwrap();
        drop((g2, g3));
        assert_eq!(t.count(a), 0);
        assert!(t.open.get(&a).is_none(), "an address with no connection is forgotten");

        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let _h1 = t.enter(v6a).unwrap();
        let _h2 = t.enter(v6b).unwrap();
        assert!(t.enter("2001:db8:1:2::77".parse().unwrap()).is_none());
        assert!(t.enter("2001:db8:1:3::1".parse().unwrap()).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), a);
    }
}
