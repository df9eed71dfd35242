//! Which names an app may resolve, and which answers count as DNS rebinding.

use sphere_app_format::manifest::ConnectionTarget;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The name entries of an app's `AllowedConnections` (IP literals are the firewall's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameRules {
    hosts: BTreeSet<String>,
    /// `*.example.com` stored as `example.com`: any name *below* it, not the name itself (as
    /// Azure Sphere).
    wildcards: Vec<String>,
    /// DNS-SD service names such as `_sample._tcp.local`: the service and its instances.
    services: Vec<String>,
}

fn below(name: &str, parent: &str) -> bool {
    name.len() > parent.len() + 1 && name.ends_with(parent) && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
}

impl NameRules {
    pub fn new(targets: &[ConnectionTarget]) -> NameRules {
        let mut rules = NameRules::default();
        for target in targets {
            match target {
                ConnectionTarget::Host(name) => {
                    rules.hosts.insert(name.to_ascii_lowercase());
                }
                ConnectionTarget::WildcardHost(suffix) => rules.wildcards.push(suffix.to_ascii_lowercase()),
                ConnectionTarget::DnsSd(name) => rules.services.push(name.to_ascii_lowercase()),
                ConnectionTarget::Ip(_) => {}
            }
        }
        rules
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.wildcards.is_empty() && self.services.is_empty()
    }

    /// May the app resolve `name` (lower case, no final dot)?
    pub fn allows(&self, name: &str) -> bool {
        self.hosts.contains(name)
            || self.wildcards.iter().any(|suffix| below(name, suffix))
            || self.services.iter().any(|service| name == service || below(name, service))
    }

    /// Is `name` a DNS-SD name of this app (whose answers are local-network addresses)?
    pub fn is_service(&self, name: &str) -> bool {
        self.services.iter().any(|service| name == service || below(name, service))
    }
}

/// Names that legitimately resolve to local addresses: mDNS/DNS-SD's `.local`.
pub fn is_local_name(name: &str) -> bool {
    name == "local" || name.ends_with(".local")
}

/// An address a public name must never resolve to (DNS rebinding): private, loopback,
/// link-local (including cloud metadata 169.254.169.254), shared, unspecified, multicast, and
/// the same inside IPv4-mapped/compatible IPv6. Documentation ranges count as public.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0..6] == [0, 0, 0, 0, 0, 0])
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[ConnectionTarget]) -> NameRules {
        NameRules::new(entries)
    }

    #[test]
    fn exact_names_and_wildcards() {
        let r = rules(&[
            ConnectionTarget::Host("allowed.example.com".into()),
            ConnectionTarget::WildcardHost("cdn.example.org".into()),
            ConnectionTarget::Ip("192.0.2.11".parse().unwrap()),
        ]);
        assert!(r.allows("allowed.example.com"));
        assert!(!r.allows("example.com"));
        assert!(!r.allows("xallowed.example.com"));
        assert!(!r.allows("allowed.example.com.evil.net"));
        assert!(r.allows("a.cdn.example.org"));
        assert!(r.allows("a.b.cdn.example.org"));
        assert!(!r.allows("cdn.example.org"), "a wildcard does not cover its own base name");
        assert!(!r.allows("evilcdn.example.org"));
        assert!(!r.allows("192.0.2.11"));
    }

    #[test]
    fn dns_sd_services_and_instances() {
        let r = rules(&[ConnectionTarget::DnsSd("_sample._tcp.local".into())]);
        assert!(r.allows("_sample._tcp.local"));
        assert!(r.allows("kitchen._sample._tcp.local"));
        assert!(r.is_service("kitchen._sample._tcp.local"));
        assert!(!r.allows("_other._tcp.local"));
        assert!(!r.allows("printer.local"));
    }

    #[test]
    fn no_entries_allow_nothing() {
        let r = rules(&[]);
        assert!(r.is_empty());
        assert!(!r.allows("example.com"));
    }

    #[test]
    fn rebinding_targets() {
        for private in [
            "10.0.0.5",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["192.0.2.10", "198.51.100.10", "8.8.8.8", "2001:db8::10", "2606:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
        assert!(is_local_name("printer.local"));
        assert!(!is_local_name("local.example.com"));
    }
}
