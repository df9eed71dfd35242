//! The daemon's state: every app's compartment, its allowed names and the addresses its DNS
//! answers added, and the nf_tables socket that keeps the kernel in step.

use crate::names::NameRules;
use crate::nft::Nft;
use crate::rules::{self, AppPolicy, Element};
use crate::telemetry::Telemetry;
use sphere_app_format::manifest::{Capabilities, ConnectionTarget};
use sphere_netd_api::{AppRules, Compartment, ResolvedAddress};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// At most this many DNS-derived addresses per app (a hostile upstream or app cannot grow the
/// kernel's sets without bound).
pub const MAX_DYNAMIC_PER_APP: usize = 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub runtime_dir: PathBuf,
    pub upstreams: Vec<SocketAddr>,
    pub ttl_min: u32,
    pub ttl_max: u32,
    /// NFLOG group for blocked packets; None when the kernel has no NFLOG (counters only).
    pub log_group: Option<u16>,
}

pub struct App {
    pub policy: AppPolicy,
    pub names: NameRules,
    pub allowed: Vec<ConnectionTarget>,
    pub netns: PathBuf,
    /// Address -> (the name that answered it, when it leaves the set).
    pub dynamic: HashMap<IpAddr, (String, Instant)>,
    /// SRV targets of the app's DNS-SD services, resolvable until the instant.
    pub learned: HashMap<String, Instant>,
    pub proxies: Vec<tokio::task::AbortHandle>,
}

impl App {
    fn live_elements(&self, now: Instant) -> Vec<Element> {
        self.dynamic
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(address, (_, until))| Element {
                address: *address,
                timeout_ms: Some(until.duration_since(now).as_millis().max(1) as u64),
            })
            .collect()
    }

    pub fn compartment(&self, config: &Config) -> Compartment {
        let slot = self.policy.slot;
        let (gw4, addr4, gw6, addr6) = rules::addresses(slot);
        Compartment {
            component_id: self.policy.component_id.clone(),
            host_interface: rules::interface(slot),
            address_v4: addr4.to_string(),
            address_v6: addr6.to_string(),
            gateway_v4: gw4.to_string(),
            gateway_v6: gw6.to_string(),
            resolv_conf: resolv_conf_path(&config.runtime_dir, &self.policy.component_id).display().to_string(),
        }
    }
}

pub fn resolv_conf_path(runtime_dir: &Path, component_id: &str) -> PathBuf {
    runtime_dir.join(component_id).join("resolv.conf")
}

pub struct Firewall {
    pub config: Config,
    pub apps: BTreeMap<String, App>,
    pub nft: Nft,
    pub telemetry: Telemetry,
}

impl Firewall {
    pub fn free_slot(&self, component_id: &str) -> Option<u16> {
        if let Some(app) = self.apps.get(component_id) {
            return Some(app.policy.slot);
        }
        (0..=rules::MAX_SLOT).find(|slot| self.apps.values().all(|a| a.policy.slot != *slot))
    }

    pub fn table(&self) -> rules::Table {
        let now = Instant::now();
        let policies: Vec<AppPolicy> = self.apps.values().map(|a| a.policy.clone()).collect();
        rules::build(&policies, self.config.log_group, |slot| {
            self.apps.values().find(|a| a.policy.slot == slot).map(|a| a.live_elements(now)).unwrap_or_default()
        })
    }

    /// Replace the kernel's table with the current state (one batch).
    pub fn apply(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        for app in self.apps.values_mut() {
            app.dynamic.retain(|_, (_, until)| *until > now);
            app.learned.retain(|_, until| *until > now);
        }
        let table = self.table();
        self.nft.replace(&table)
    }

    pub fn slot_owner(&self, slot: u16) -> Option<String> {
        self.apps.values().find(|a| a.policy.slot == slot).map(|a| a.policy.component_id.clone())
    }

    /// May `component_id` resolve `name`?
    pub fn name_allowed(&self, component_id: &str, name: &str) -> Option<(bool, bool)> {
        let app = self.apps.get(component_id)?;
        let learned = app.learned.get(name).is_some_and(|until| *until > Instant::now());
        let allowed = app.names.allows(name) || learned;
        // Local-network answers are expected for DNS-SD names and their SRV targets.
        let local_ok = crate::names::is_local_name(name) || app.names.is_service(name) || learned;
        Some((allowed, local_ok))
    }

    /// Put answered addresses into the app's sets for `ttl` seconds (already bounded).
    pub fn admit(
        &mut self,
        component_id: &str,
        name: &str,
        addresses: &[(IpAddr, u32)],
        srv_targets: &[(String, u32)],
    ) -> std::io::Result<()> {
        let now = Instant::now();
        let Some(app) = self.apps.get_mut(component_id) else { return Ok(()) };
        for (target, ttl) in srv_targets {
            if app.learned.len() < MAX_DYNAMIC_PER_APP {
                app.learned.insert(target.clone(), now + Duration::from_secs(u64::from(*ttl)));
            }
        }
        let slot = app.policy.slot;
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (address, ttl) in addresses {
            if app.dynamic.len() >= MAX_DYNAMIC_PER_APP && !app.dynamic.contains_key(address) {
                app.dynamic.retain(|_, (_, until)| *until > now);
                if app.dynamic.len() >= MAX_DYNAMIC_PER_APP {
                    continue;
                }
            }
            let until = now + Duration::from_secs(u64::from(*ttl));
            app.dynamic.insert(*address, (name.to_owned(), until));
            let element = Element { address: *address, timeout_ms: Some(u64::from(*ttl) * 1000) };
            if address.is_ipv6() { v6.push(element) } else { v4.push(element) }
        }
        self.nft.add_elements(&rules::set_name(slot, false), &v4)?;
        self.nft.add_elements(&rules::set_name(slot, true), &v6)
    }

    pub fn rules_of(&self, component_id: &str) -> Option<AppRules> {
        let app = self.apps.get(component_id)?;
        let now = Instant::now();
        let mut resolved: Vec<ResolvedAddress> = app
            .dynamic
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(address, (name, until))| ResolvedAddress {
                name: name.clone(),
                address: address.to_string(),
                expires_in: until.duration_since(now).as_secs(),
            })
            .collect();
        resolved.sort_by(|a, b| a.name.cmp(&b.name).then(a.address.cmp(&b.address)));
        Some(AppRules {
            compartment: app.compartment(&self.config),
            allowed_connections: app.allowed.iter().map(|t| t.to_string()).collect(),
            tcp_server_ports: app.policy.tcp_server_ports.clone(),
            udp_server_ports: app.policy.udp_server_ports.clone(),
            resolved,
            nft: self.table().render_app(app.policy.slot),
        })
    }
}

/// The firewall's view of an app's capabilities.
pub fn policy(slot: u16, component_id: &str, capabilities: &Capabilities) -> (AppPolicy, NameRules) {
    let ip_literals = capabilities
        .allowed_connections
        .iter()
        .filter_map(|t| match t {
            ConnectionTarget::Ip(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    (
        AppPolicy {
            slot,
            component_id: component_id.to_owned(),
            ip_literals,
            tcp_server_ports: capabilities.allowed_tcp_server_ports.clone(),
            udp_server_ports: capabilities.allowed_udp_server_ports.clone(),
        },
        NameRules::new(&capabilities.allowed_connections),
    )
}
