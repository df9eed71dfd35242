//! The `inet opensphere` table as data: built from every app's policy, rendered as nft syntax
//! (for `sphere net rules`) and encoded into one netlink batch by [`crate::nft`].
//!
//! Shape of the table (one per device, replaced as a whole on every change):
//!
//! ```text
//! chain forward { type filter hook forward priority 0; policy accept;
//!     ct state established,related accept
//!     iifname "sph*" oifname "sph*" drop             # apps never reach each other
//!     iifname "sph3" jump out_3                      # one pair of jumps per app
//!     oifname "sph3" jump in_3
//!     iifname "sph*" drop                            # an interface no app owns
//!     oifname "sph*" drop }
//! chain out_3 { ip saddr 10.213.0.14 ip daddr @allow4_3 accept
//!     ip6 saddr fd53:7068:6e00:3::2 ip6 daddr @allow6_3 accept
//!     limit rate 10/second burst 20 packets log prefix "osn:out:3" group 7
//!     reject with icmpx admin-prohibited }
//! chain in_3 { tcp dport 8080 accept; limit ... log prefix "osn:in:3" group 7; drop }
//! chain input { type filter hook input priority 0; policy accept;
//!     iifname "sph3" jump host_3; iifname "sph*" drop }
//! chain host_3 { ct state established,related accept; its own DNS proxy (UDP 53) accept;
//!     IPv6 neighbour solicitation/advertisement accept; limit ... log prefix "osn:host:3" group 7; reject }
//! chain postrouting { type nat hook postrouting priority 100; policy accept;
//!     ip saddr 10.213.0.0/16 oifname != "sph*" masquerade; same for IPv6 }
//! ```
//!
//! Only forwarded and host-bound traffic of `sph*` interfaces is touched: other traffic passes
//! these chains unchanged and the host's own tables decide about it. Every accept for an app
//! also checks the app's own source address, so a forged source (a raw or packet socket) cannot
//! borrow another app's allow-list. Sets have the timeout flag: IP literals stay, addresses
//! from DNS answers leave when their (bounded) TTL runs out, without the daemon's help.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TABLE: &str = "opensphere";
/// Host side interfaces are `sph<slot>`; the app side is `eth0` in the app's namespace.
pub const IFACE_PREFIX: &str = "sph";
/// IPv4 compartments: a /30 per app from this /16 (gateway .1, app .2 of each /30).
pub const V4_NET: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
pub const V4_PREFIX: u8 = 16;
/// IPv6 compartments: a /64 per app from this ULA /48 (gateway ::1, app ::2).
pub const V6_NET: Ipv6Addr = Ipv6Addr::new(0xfd53, 0x7068, 0x6e00, 0, 0, 0, 0, 0);
pub const V6_PREFIX: u8 = 48;
/// The largest slot: 16384 /30 networks fit in the /16.
pub const MAX_SLOT: u16 = 16383;
/// Blocked packets logged per app and direction (to NFLOG, for telemetry).
pub const LOG_RATE_PER_SECOND: u64 = 10;
pub const LOG_BURST: u32 = 20;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_RELATED: u32 = 4;

/// Addresses of the compartment in `slot`.
pub fn addresses(slot: u16) -> (Ipv4Addr, Ipv4Addr, Ipv6Addr, Ipv6Addr) {
    let base = u32::from(V4_NET) + 4 * u32::from(slot);
    let net6 = u128::from(V6_NET) | (u128::from(slot) << 64);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2), Ipv6Addr::from(net6 | 1), Ipv6Addr::from(net6 | 2))
}

pub fn interface(slot: u16) -> String {
    format!("{IFACE_PREFIX}{slot}")
}

/// What the firewall needs to know about one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    pub slot: u16,
    pub component_id: String,
    /// IP-literal `AllowedConnections` entries, allowed as written.
    pub ip_literals: Vec<IpAddr>,
    pub tcp_server_ports: Vec<u16>,
    pub udp_server_ports: Vec<u16>,
}

/// An address in an app's set: permanent (IP literal) or with the milliseconds it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub address: IpAddr,
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    IifName(String),
    IifPrefix(String),
    OifName(String),
    OifPrefix(String),
    OifNotPrefix(String),
    Saddr(IpAddr),
    Daddr(IpAddr),
    SaddrPrefix(IpAddr, u8),
    DaddrSet { set: String, v6: bool },
    L4Proto(u8),
    Dport(u16),
    Icmpv6Type(u8),
    CtState(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Masquerade,
    Counter,
    /// Rate-limited log to NFLOG `group`.
    Log {
        prefix: String,
        group: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Input,
    Forward,
    Postrouting,
}

impl Hook {
    pub fn number(self) -> u32 {
        match self {
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Postrouting => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    /// `filter` or `nat`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub v6: bool,
    pub elements: Vec<Element>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
}

pub fn set_name(slot: u16, v6: bool) -> String {
    format!("allow{}_{slot}", if v6 { 6 } else { 4 })
}

fn rule(matches: Vec<Match>, actions: Vec<Action>) -> Rule {
    Rule { matches, actions }
}

fn established() -> Match {
    Match::CtState(CT_ESTABLISHED | CT_RELATED)
}

/// Log to NFLOG when the kernel has it (`log_group`), otherwise only count.
fn log(kind: &str, slot: u16, group: Option<u16>) -> Vec<Action> {
    match group {
        Some(group) => vec![Action::Log { prefix: format!("osn:{kind}:{slot}"), group }],
        None => vec![Action::Counter],
    }
}

fn base(name: &str, hook: Hook, priority: i32, kind: &'static str, rules: Vec<Rule>) -> Chain {
    Chain { name: name.to_owned(), base: Some(BaseChain { hook, priority, kind }), rules }
}

fn regular(name: String, rules: Vec<Rule>) -> Chain {
    Chain { name, base: None, rules }
}

/// The whole table for these apps; `dynamic(slot)` gives the DNS-derived addresses to keep.
pub fn build(apps: &[AppPolicy], log_group: Option<u16>, dynamic: impl Fn(u16) -> Vec<Element>) -> Table {
    let prefix = || IFACE_PREFIX.to_owned();
    let mut forward = vec![
        rule(vec![established()], vec![Action::Accept]),
        rule(vec![Match::IifPrefix(prefix()), Match::OifPrefix(prefix())], vec![Action::Counter, Action::Drop]),
    ];
    let mut input = Vec::new();
    let mut chains = Vec::new();
    let mut sets = Vec::new();
    for app in apps {
        let slot = app.slot;
        let iface = interface(slot);
        let (gw4, addr4, gw6, addr6) = addresses(slot);
        let (out, inbound, host) = (format!("out_{slot}"), format!("in_{slot}"), format!("host_{slot}"));
        forward.push(rule(vec![Match::IifName(iface.clone())], vec![Action::Jump(out.clone())]));
        forward.push(rule(vec![Match::OifName(iface.clone())], vec![Action::Jump(inbound.clone())]));
        input.push(rule(vec![Match::IifName(iface.clone())], vec![Action::Jump(host.clone())]));

        let mut out_rules = Vec::new();
        for (v6, source) in [(false, IpAddr::V4(addr4)), (true, IpAddr::V6(addr6))] {
            let name = set_name(slot, v6);
            out_rules.push(rule(
                vec![Match::Saddr(source), Match::DaddrSet { set: name.clone(), v6 }],
                vec![Action::Accept],
            ));
            let mut elements: Vec<Element> = app
                .ip_literals
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(|&address| Element { address, timeout_ms: None })
                .collect();
            for element in dynamic(slot) {
                if element.address.is_ipv6() == v6 && !elements.iter().any(|e| e.address == element.address) {
                    elements.push(element);
                }
            }
            sets.push(Set { name, v6, elements });
        }
        out_rules.push(rule(vec![], log("out", slot, log_group)));
        out_rules.push(rule(vec![], vec![Action::Reject]));
        chains.push(regular(out, out_rules));

        let mut in_rules = Vec::new();
        for (proto, ports) in [(IPPROTO_TCP, &app.tcp_server_ports), (IPPROTO_UDP, &app.udp_server_ports)] {
            for &port in ports {
                in_rules.push(rule(vec![Match::L4Proto(proto), Match::Dport(port)], vec![Action::Accept]));
            }
        }
        in_rules.push(rule(vec![], log("in", slot, log_group)));
        in_rules.push(rule(vec![], vec![Action::Drop]));
        chains.push(regular(inbound, in_rules));

        let mut host_rules = vec![rule(vec![established()], vec![Action::Accept])];
        // The app's own DNS proxy (UDP; it serves no TCP), on its own gateway address only:
        // another app's proxy would answer with that app's allow-list.
        for gateway in [IpAddr::V4(gw4), IpAddr::V6(gw6)] {
            host_rules.push(rule(
                vec![Match::Daddr(gateway), Match::L4Proto(IPPROTO_UDP), Match::Dport(53)],
                vec![Action::Accept],
            ));
        }
        // IPv6 needs neighbour discovery with its gateway (solicitations and advertisements;
        // routes are static, so no router solicitations).
        for icmp_type in [135, 136] {
            host_rules
                .push(rule(vec![Match::L4Proto(IPPROTO_ICMPV6), Match::Icmpv6Type(icmp_type)], vec![Action::Accept]));
        }
        host_rules.push(rule(vec![], log("host", slot, log_group)));
        host_rules.push(rule(vec![], vec![Action::Reject]));
        chains.push(regular(host, host_rules));
    }
    forward.push(rule(vec![Match::IifPrefix(prefix())], vec![Action::Counter, Action::Drop]));
    forward.push(rule(vec![Match::OifPrefix(prefix())], vec![Action::Counter, Action::Drop]));
    input.push(rule(vec![Match::IifPrefix(prefix())], vec![Action::Counter, Action::Drop]));
    let postrouting = vec![
        rule(
            vec![Match::SaddrPrefix(IpAddr::V4(V4_NET), V4_PREFIX), Match::OifNotPrefix(prefix())],
            vec![Action::Masquerade],
        ),
        rule(
            vec![Match::SaddrPrefix(IpAddr::V6(V6_NET), V6_PREFIX), Match::OifNotPrefix(prefix())],
            vec![Action::Masquerade],
        ),
    ];
    let mut all = vec![
        base("forward", Hook::Forward, 0, "filter", forward),
        base("input", Hook::Input, 0, "filter", input),
        base("postrouting", Hook::Postrouting, 100, "nat", postrouting),
    ];
    all.extend(chains);
    Table { chains: all, sets }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv6() { "ip6" } else { "ip" }
}

fn l4(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        _ => "th",
    }
}

impl fmt::Display for Rule {
    /// nft syntax, as `nft list table inet opensphere` would print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        let mut proto = 0;
        for m in &self.matches {
            words.push(match m {
                Match::IifName(name) => format!("iifname \"{name}\""),
                Match::IifPrefix(prefix) => format!("iifname \"{prefix}*\""),
                Match::OifName(name) => format!("oifname \"{name}\""),
                Match::OifPrefix(prefix) => format!("oifname \"{prefix}*\""),
                Match::OifNotPrefix(prefix) => format!("oifname != \"{prefix}*\""),
                Match::Saddr(ip) => format!("{} saddr {ip}", family(ip)),
                Match::Daddr(ip) => format!("{} daddr {ip}", family(ip)),
                Match::SaddrPrefix(ip, len) => format!("{} saddr {ip}/{len}", family(ip)),
                Match::DaddrSet { set, v6 } => format!("{} daddr @{set}", if *v6 { "ip6" } else { "ip" }),
                Match::L4Proto(p) => {
                    proto = *p;
                    format!("meta l4proto {}", l4(*p))
                }
                Match::Dport(port) => format!("{} dport {port}", l4(proto)),
                Match::Icmpv6Type(t) => format!("icmpv6 type {t}"),
                Match::CtState(_) => "ct state established,related".to_owned(),
            });
        }
        for a in &self.actions {
            words.push(match a {
                Action::Accept => "accept".to_owned(),
                Action::Drop => "drop".to_owned(),
                Action::Reject => "reject with icmpx admin-prohibited".to_owned(),
                Action::Jump(chain) => format!("jump {chain}"),
                Action::Masquerade => "masquerade".to_owned(),
                Action::Counter => "counter".to_owned(),
                Action::Log { prefix, group } => format!(
                    "limit rate {LOG_RATE_PER_SECOND}/second burst {LOG_BURST} packets log prefix \"{prefix}\" group {group}"
                ),
            });
        }
        f.write_str(&words.join(" "))
    }
}

impl Chain {
    /// The chain in nft syntax, one line per rule.
    pub fn render(&self) -> Vec<String> {
        let mut lines = vec![format!("chain {} {{", self.name)];
        if let Some(base) = &self.base {
            let hook = match base.hook {
                Hook::Input => "input",
                Hook::Forward => "forward",
                Hook::Postrouting => "postrouting",
            };
            lines.push(format!("    type {} hook {hook} priority {}; policy accept;", base.kind, base.priority));
        }
        lines.extend(self.rules.iter().map(|r| format!("    {r}")));
        lines.push("}".to_owned());
        lines
    }
}

impl Table {
    /// The chains and sets that belong to one app, in nft syntax.
    pub fn render_app(&self, slot: u16) -> Vec<String> {
        let mut lines = Vec::new();
        for set in self.sets.iter().filter(|s| s.name == set_name(slot, s.v6)) {
            let kind = if set.v6 { "ipv6_addr" } else { "ipv4_addr" };
            let elements: Vec<String> = set
                .elements
                .iter()
                .map(|e| match e.timeout_ms {
                    Some(ms) => format!("{} timeout {}s", e.address, ms.div_ceil(1000)),
                    None => e.address.to_string(),
                })
                .collect();
            lines.push(format!(
                "set {} {{ type {kind}; flags timeout; elements = {{ {} }} }}",
                set.name,
                elements.join(", ")
            ));
        }
        for suffix in ["out", "in", "host"] {
            if let Some(chain) = self.chains.iter().find(|c| c.name == format!("{suffix}_{slot}")) {
                lines.extend(chain.render());
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(slot: u16, literals: &[&str], tcp: &[u16]) -> AppPolicy {
        AppPolicy {
            slot,
            component_id: format!("app{slot}"),
            ip_literals: literals.iter().map(|s| s.parse().unwrap()).collect(),
            tcp_server_ports: tcp.to_vec(),
            udp_server_ports: vec![],
        }
    }

    fn chain<'a>(table: &'a Table, name: &str) -> &'a Chain {
        table.chains.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn addresses_are_per_slot_and_disjoint() {
        let (gw, app, gw6, app6) = addresses(0);
        assert_eq!((gw.to_string(), app.to_string()), ("10.213.0.1".into(), "10.213.0.2".into()));
        assert_eq!(gw6.to_string(), "fd53:7068:6e00::1");
        assert_eq!(app6.to_string(), "fd53:7068:6e00::2");
        let (gw, app, _, app6) = addresses(3);
        assert_eq!((gw.to_string(), app.to_string()), ("10.213.0.13".into(), "10.213.0.14".into()));
        assert_eq!(app6.to_string(), "fd53:7068:6e00:3::2");
        let (_, last, _, _) = addresses(MAX_SLOT);
        assert_eq!(last.to_string(), "10.213.255.254");
    }

    #[test]
    fn ip_literals_land_in_the_apps_own_sets_only() {
        let table = build(
            &[app(1, &["192.0.2.11", "2001:db8::11"], &[]), app(2, &["198.51.100.10"], &[])],
            Some(7),
            |_| vec![],
        );
        let set = |name: &str| table.sets.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            set("allow4_1").elements,
            vec![Element { address: "192.0.2.11".parse().unwrap(), timeout_ms: None }]
        );
        assert_eq!(set("allow6_1").elements.len(), 1);
        assert_eq!(set("allow4_2").elements[0].address.to_string(), "198.51.100.10");
        assert!(set("allow6_2").elements.is_empty());
    }

    #[test]
    fn outbound_is_default_deny_and_checks_the_source() {
        let table = build(&[app(4, &[], &[])], Some(7), |_| vec![]);
        let out = chain(&table, "out_4");
        // Only set-based accepts, each bound to the app's own source address.
        for r in out.rules.iter().filter(|r| r.actions.contains(&Action::Accept)) {
            assert!(matches!(r.matches[0], Match::Saddr(_)), "{r}");
            assert!(matches!(r.matches[1], Match::DaddrSet { .. }), "{r}");
        }
        assert_eq!(out.rules.last().unwrap().actions, vec![Action::Reject]);
        assert!(table.sets.iter().all(|s| s.elements.is_empty()), "no AllowedConnections: empty sets");
        assert_eq!(out.rules[0].to_string(), "ip saddr 10.213.0.18 ip daddr @allow4_4 accept");
    }

    #[test]
    fn inbound_allows_only_the_server_ports() {
        let table = build(&[app(1, &[], &[8080])], Some(7), |_| vec![]);
        let inbound = chain(&table, "in_1");
        let accepts: Vec<String> =
            inbound.rules.iter().filter(|r| r.actions == vec![Action::Accept]).map(|r| r.to_string()).collect();
        assert_eq!(accepts, vec!["meta l4proto tcp tcp dport 8080 accept"]);
        assert_eq!(inbound.rules.last().unwrap().actions, vec![Action::Drop]);
    }

    #[test]
    fn apps_cannot_reach_each_other_or_other_apps_dns_proxies() {
        let table = build(&[app(1, &[], &[]), app(2, &[], &[])], Some(7), |_| vec![]);
        let forward = chain(&table, "forward");
        let app_to_app =
            forward.rules.iter().position(|r| r.to_string() == "iifname \"sph*\" oifname \"sph*\" counter drop");
        let first_jump = forward.rules.iter().position(|r| matches!(r.actions[0], Action::Jump(_)));
        assert!(app_to_app.unwrap() < first_jump.unwrap());
        let host = chain(&table, "host_2");
        let dns: Vec<String> =
            host.rules.iter().filter(|r| r.matches.contains(&Match::Dport(53))).map(|r| r.to_string()).collect();
        assert_eq!(dns.len(), 2);
        assert!(dns.iter().all(|r| r.contains("10.213.0.9") || r.contains("fd53:7068:6e00:2::1")), "{dns:?}");
    }

    #[test]
    fn without_nflog_blocks_are_counted_not_logged() {
        let table = build(&[app(1, &[], &[80])], None, |_| vec![]);
        let actions: Vec<&Action> = table.chains.iter().flat_map(|c| &c.rules).flat_map(|r| &r.actions).collect();
        assert!(!actions.iter().any(|a| matches!(a, Action::Log { .. })));
        assert_eq!(chain(&table, "out_1").rules.last().unwrap().actions, vec![Action::Reject]);
        assert!(chain(&table, "out_1").rules.iter().any(|r| r.actions == vec![Action::Counter]));
    }

    #[test]
    fn dynamic_addresses_keep_their_remaining_time() {
        let table = build(&[app(1, &["192.0.2.11"], &[])], Some(7), |slot| {
            assert_eq!(slot, 1);
            vec![
                Element { address: "192.0.2.10".parse().unwrap(), timeout_ms: Some(4_000) },
                Element { address: "192.0.2.11".parse().unwrap(), timeout_ms: Some(4_000) },
            ]
        });
        let set = table.sets.iter().find(|s| s.name == "allow4_1").unwrap();
        // The literal stays permanent even when DNS also answered with it.
        assert_eq!(set.elements.len(), 2);
        assert_eq!(set.elements[0].timeout_ms, None);
        assert_eq!(set.elements[1].timeout_ms, Some(4_000));
        assert!(table.render_app(1)[0].contains("192.0.2.10 timeout 4s"));
    }
}
