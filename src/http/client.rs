//! Who is asking, for rate limits: the client's address as seen through the configured
//! trusted proxies (`CEDAR_TRUSTED_PROXIES`), with IPv6 clients grouped by their /64 — one
//! household or host, however many addresses it rotates through.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// The rate-limit key of a request's client. `X-Forwarded-For` is read only when the TCP peer
/// is a trusted proxy; then the rightmost address that is not itself a trusted proxy counts.
pub fn client_key(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    let mut client = peer.ip();
    if trusted.contains(&client)
        && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
    {
        for hop in forwarded.rsplit(',').map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted.contains(&ip) => continue,
                Ok(ip) => {
                    client = ip;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    bucket(client)
}

/// IPv4 as is; IPv6 by its /64 prefix.
fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = ["10.0.0.2".parse().unwrap()];
        assert_eq!(client_key(proxy, &headers("203.0.113.7"), &trusted), "203.0.113.7");
        // A client cannot pick its own key by prepending addresses.
        assert_eq!(client_key(proxy, &headers("1.2.3.4, 203.0.113.7"), &trusted), "203.0.113.7");
        // Without trust, the header is ignored.
        assert_eq!(client_key(proxy, &headers("203.0.113.7"), &[]), "10.0.0.2");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:1".parse().unwrap();
        assert_eq!(client_key(a, &HeaderMap::new(), &[]), client_key(b, &HeaderMap::new(), &[]));
        assert_eq!(client_key(a, &HeaderMap::new(), &[]), "2001:db8:1:2::/64");
    }
}
