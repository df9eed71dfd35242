//! nf_tables over netlink: the [`Table`] as one atomic batch, and set-element updates.
//!
//! The batch is `add table; delete table; add table; chains; sets; elements; rules`: the kernel
//! applies all of it or none, so no packet ever sees a half-built table, and other tables of
//! the host are never touched. Attribute numbers are from `linux/netfilter/nf_tables.h`.

use crate::netlink::{Message, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, Socket};
use crate::rules::{Action, Chain, Element, Match, Rule, Set, TABLE, Table};
use std::io;
use std::net::IpAddr;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// nft's datatype ids, kept as the set's key type so `nft list` prints addresses.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;

const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;

fn msg_type(cmd: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | cmd
}

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

/// Builds one batch of nf_tables messages.
struct Batch {
    bytes: Vec<u8>,
    last_seq: u32,
    /// Offset of the last message's header, whose flags get NLM_F_ACK at commit.
    last_at: usize,
    set_id: u32,
}

impl Batch {
    fn new(socket: &mut Socket) -> Batch {
        let mut begin = Message::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, socket.next_seq());
        begin.header(&nfgen(0, NFNL_SUBSYS_NFTABLES));
        Batch { bytes: begin.finish(), last_seq: 0, last_at: 0, set_id: 0 }
    }

    fn add(&mut self, socket: &mut Socket, cmd: u16, flags: u16, build: impl FnOnce(&mut Message)) {
        let seq = socket.next_seq();
        let mut message = Message::new(msg_type(cmd), NLM_F_REQUEST | flags, seq);
        message.header(&nfgen(NFPROTO_INET, 0));
        build(&mut message);
        self.last_at = self.bytes.len();
        self.bytes.extend_from_slice(&message.finish());
        self.last_seq = seq;
    }

    /// Send and wait for the kernel's verdict on the whole batch.
    fn commit(mut self, socket: &mut Socket, what: &str) -> io::Result<()> {
        let mut end = Message::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, socket.next_seq());
        end.header(&nfgen(0, NFNL_SUBSYS_NFTABLES));
        self.bytes.extend_from_slice(&end.finish());
        // The kernel reports every failing message whether or not it asked for an ack, and
        // sends errors and acks together once the whole batch is processed: acking only the
        // last message (not 2000 of them for 100 apps) and waiting for that ack sees every
        // earlier error too.
        let flags_at = self.last_at + 6;
        let flags = u16::from_ne_bytes([self.bytes[flags_at], self.bytes[flags_at + 1]]) | NLM_F_ACK;
        self.bytes[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
        socket.transact(&self.bytes, &[self.last_seq], what).map(|_| ())
    }
}

/// A netlink socket for nf_tables.
pub struct Nft {
    socket: Socket,
}

impl Nft {
    pub fn open() -> io::Result<Nft> {
        Ok(Nft { socket: Socket::open(NETLINK_NETFILTER)? })
    }

    /// Replace the `inet opensphere` table with `table`, atomically.
    pub fn replace(&mut self, table: &Table) -> io::Result<()> {
        let socket = &mut self.socket;
        let mut batch = Batch::new(socket);
        let table_name = |m: &mut Message| {
            m.str(NFTA_TABLE_NAME, TABLE);
        };
        // add-then-delete: deleting a table that does not exist would fail the batch.
        batch.add(socket, NFT_MSG_NEWTABLE, NLM_F_CREATE, table_name);
        batch.add(socket, NFT_MSG_DELTABLE, 0, table_name);
        batch.add(socket, NFT_MSG_NEWTABLE, NLM_F_CREATE, table_name);
        for chain in &table.chains {
            batch.add(socket, NFT_MSG_NEWCHAIN, NLM_F_CREATE, |m| encode_chain(m, chain));
        }
        for set in &table.sets {
            batch.set_id += 1;
            let id = batch.set_id;
            batch.add(socket, NFT_MSG_NEWSET, NLM_F_CREATE, |m| encode_set(m, set, id));
            if !set.elements.is_empty() {
                batch.add(socket, NFT_MSG_NEWSETELEM, NLM_F_CREATE, |m| encode_elements(m, &set.name, &set.elements));
            }
        }
        for chain in &table.chains {
            for rule in &chain.rules {
                batch.add(socket, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, |m| encode_rule(m, &chain.name, rule));
            }
        }
        batch.commit(socket, "replace table inet opensphere")
    }

    /// Add (or refresh) addresses in one set, in one batch.
    pub fn add_elements(&mut self, set: &str, elements: &[Element]) -> io::Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let socket = &mut self.socket;
        let mut batch = Batch::new(socket);
        batch.add(socket, NFT_MSG_NEWSETELEM, NLM_F_CREATE, |m| encode_elements(m, set, elements));
        batch.commit(socket, &format!("add elements to set {set}"))
    }
}

fn encode_chain(m: &mut Message, chain: &Chain) {
    m.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, &chain.name);
    if let Some(base) = &chain.base {
        m.begin(NFTA_CHAIN_HOOK)
            .be32(NFTA_HOOK_HOOKNUM, base.hook.number())
            .be32(NFTA_HOOK_PRIORITY, base.priority as u32)
            .end();
        m.be32(NFTA_CHAIN_POLICY, NF_ACCEPT).str(NFTA_CHAIN_TYPE, base.kind);
    }
}

fn encode_set(m: &mut Message, set: &Set, id: u32) {
    let (key_type, key_len) = if set.v6 { (TYPE_IP6ADDR, 16) } else { (TYPE_IPADDR, 4) };
    m.str(NFTA_SET_TABLE, TABLE)
        .str(NFTA_SET_NAME, &set.name)
        .be32(NFTA_SET_FLAGS, NFT_SET_TIMEOUT)
        .be32(NFTA_SET_KEY_TYPE, key_type)
        .be32(NFTA_SET_KEY_LEN, key_len)
        .be32(NFTA_SET_ID, id);
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn encode_elements(m: &mut Message, set: &str, elements: &[Element]) {
    m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE).str(NFTA_SET_ELEM_LIST_SET, set);
    m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    for element in elements {
        m.begin(NFTA_LIST_ELEM);
        m.begin(NFTA_SET_ELEM_KEY).attr(NFTA_DATA_VALUE, &ip_bytes(&element.address)).end();
        if let Some(ms) = element.timeout_ms {
            m.be64(NFTA_SET_ELEM_TIMEOUT, ms.max(1));
        }
        m.end();
    }
    m.end();
}

/// Writes the expressions of one rule.
struct Exprs<'a> {
    m: &'a mut Message,
    /// The layer 3 family already checked in this rule (payload offsets depend on it).
    nfproto: Option<u8>,
}

impl Exprs<'_> {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Message)) {
        self.m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).begin(NFTA_EXPR_DATA);
        data(self.m);
        self.m.end().end();
    }

    fn bare(&mut self, name: &str) {
        self.m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).end();
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |m| {
            m.be32(1, REG_1).be32(2, key); // DREG, KEY
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |m| {
            m.be32(1, REG_1).be32(2, op).begin(3).attr(NFTA_DATA_VALUE, data).end();
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |m| {
            m.be32(1, REG_1).be32(2, base).be32(3, offset).be32(4, len);
        });
    }

    fn bitwise(&mut self, mask: &[u8]) {
        let zero = vec![0u8; mask.len()];
        self.expr("bitwise", |m| {
            m.be32(1, REG_1).be32(2, REG_1).be32(3, mask.len() as u32);
            m.begin(4).attr(NFTA_DATA_VALUE, mask).end();
            m.begin(5).attr(NFTA_DATA_VALUE, &zero).end();
        });
    }

    fn family(&mut self, v6: bool) {
        let want = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
        if self.nfproto != Some(want) {
            self.meta(META_NFPROTO);
            self.cmp(CMP_EQ, &[want]);
            self.nfproto = Some(want);
        }
    }

    /// Load the source (or destination) address of the checked family into register 1.
    fn address(&mut self, v6: bool, source: bool) {
        self.family(v6);
        let (offset, len) = match (v6, source) {
            (false, true) => (12, 4),
            (false, false) => (16, 4),
            (true, true) => (8, 16),
            (true, false) => (24, 16),
        };
        self.payload(BASE_NETWORK, offset, len);
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) {
        self.expr("immediate", |m| {
            m.be32(1, REG_VERDICT).begin(2).begin(NFTA_DATA_VERDICT).be32(NFTA_VERDICT_CODE, code);
            if let Some(chain) = chain {
                m.str(NFTA_VERDICT_CHAIN, chain);
            }
            m.end().end();
        });
    }
}

fn ifname(name: &str) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (slot, byte) in bytes.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    bytes
}

fn prefix_mask(len: usize, bits: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let start = (i * 8) as u32;
            let bits = u32::from(bits);
            if bits >= start + 8 {
                0xff
            } else if bits <= start {
                0
            } else {
                0xffu8 << (8 - (bits - start))
            }
        })
        .collect()
}

fn encode_rule(m: &mut Message, chain: &str, rule: &Rule) {
    m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain).begin(NFTA_RULE_EXPRESSIONS);
    let mut e = Exprs { m, nfproto: None };
    for matcher in &rule.matches {
        match matcher {
            Match::IifName(name) => {
                e.meta(META_IIFNAME);
                e.cmp(CMP_EQ, &ifname(name));
            }
            Match::OifName(name) => {
                e.meta(META_OIFNAME);
                e.cmp(CMP_EQ, &ifname(name));
            }
            // A shorter comparison matches the prefix, as nft's `"sph*"`.
            Match::IifPrefix(prefix) => {
                e.meta(META_IIFNAME);
                e.cmp(CMP_EQ, prefix.as_bytes());
            }
            Match::OifPrefix(prefix) => {
                e.meta(META_OIFNAME);
                e.cmp(CMP_EQ, prefix.as_bytes());
            }
            Match::OifNotPrefix(prefix) => {
                e.meta(META_OIFNAME);
                e.cmp(CMP_NEQ, prefix.as_bytes());
            }
            Match::Saddr(ip) | Match::Daddr(ip) => {
                e.address(ip.is_ipv6(), matches!(matcher, Match::Saddr(_)));
                e.cmp(CMP_EQ, &ip_bytes(ip));
            }
            Match::SaddrPrefix(ip, bits) => {
                e.address(ip.is_ipv6(), true);
                let bytes = ip_bytes(ip);
                let mask = prefix_mask(bytes.len(), *bits);
                e.bitwise(&mask);
                let masked: Vec<u8> = bytes.iter().zip(&mask).map(|(b, k)| b & k).collect();
                e.cmp(CMP_EQ, &masked);
            }
            Match::DaddrSet { set, v6 } => {
                e.address(*v6, false);
                let set = set.clone();
                e.expr("lookup", |m| {
                    m.str(1, &set).be32(2, REG_1); // SET, SREG
                });
            }
            Match::L4Proto(proto) => {
                e.meta(META_L4PROTO);
                e.cmp(CMP_EQ, &[*proto]);
            }
            Match::Dport(port) => {
                e.payload(BASE_TRANSPORT, 2, 2);
                e.cmp(CMP_EQ, &port.to_be_bytes());
            }
            Match::Icmpv6Type(kind) => {
                e.payload(BASE_TRANSPORT, 0, 1);
                e.cmp(CMP_EQ, &[*kind]);
            }
            Match::CtState(bits) => {
                e.expr("ct", |m| {
                    m.be32(1, REG_1).be32(2, 0); // DREG, KEY = state
                });
                // ct state is a host-order u32 in the register.
                e.bitwise(&bits.to_ne_bytes());
                e.cmp(CMP_NEQ, &[0, 0, 0, 0]);
            }
        }
    }
    for action in &rule.actions {
        match action {
            Action::Accept => e.verdict(NF_ACCEPT, None),
            Action::Drop => e.verdict(NF_DROP, None),
            Action::Jump(chain) => e.verdict(NFT_JUMP as u32, Some(chain)),
            Action::Reject => e.expr("reject", |m| {
                // NFT_REJECT_ICMPX_UNREACH with NFT_REJECT_ICMPX_ADMIN_PROHIBITED: an ICMP or
                // ICMPv6 "administratively prohibited", so the app fails fast instead of hanging.
                m.be32(1, 2).attr(2, &[3]);
            }),
            Action::Masquerade => e.bare("masq"),
            Action::Counter => e.bare("counter"),
            Action::Log { prefix, group } => {
                e.expr("limit", |m| {
                    m.be64(1, crate::rules::LOG_RATE_PER_SECOND).be64(2, 1).be32(3, crate::rules::LOG_BURST).be32(4, 0);
                });
                e.expr("log", |m| {
                    m.attr(1, &group.to_be_bytes()).str(2, prefix).be32(3, 96);
                });
            }
        }
    }
    e.m.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the running kernel, in a throw-away network namespace of this test's thread
    /// (root only; skipped otherwise): a good table loads, and a batch with one bad message in
    /// the middle is refused as a whole with the kernel's error.
    #[test]
    fn kernel_accepts_the_table_and_reports_a_bad_message() {
        let result = std::thread::spawn(|| {
            // SAFETY: changes only this thread's network namespace.
            if unsafe { libc::geteuid() } != 0 || unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let policy = crate::rules::AppPolicy {
                slot: 1,
                component_id: "a".into(),
                ip_literals: vec!["192.0.2.11".parse().unwrap()],
                tcp_server_ports: vec![8080],
                udp_server_ports: vec![],
            };
            let mut table = crate::rules::build(&[policy], Some(7), |_| vec![]);
            let mut nft = Nft::open().ok()?;
            let good = nft.replace(&table);
            table.chains[0].rules.insert(1, Rule { matches: vec![], actions: vec![Action::Jump("missing".into())] });
            let bad = nft.replace(&table);
            Some((good, bad))
        })
        .join()
        .unwrap();
        let Some((good, bad)) = result else { return };
        good.unwrap();
        let error = bad.unwrap_err().to_string();
        assert!(error.contains("replace table inet opensphere"), "{error}");
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(4, 16), vec![255, 255, 0, 0]);
        assert_eq!(prefix_mask(4, 20), vec![255, 255, 0xf0, 0]);
        assert_eq!(prefix_mask(16, 48)[..7], [255, 255, 255, 255, 255, 255, 0]);
    }
}
