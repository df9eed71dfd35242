//! The `Capabilities` section: what an app may touch. Nothing is granted unless listed.

use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use uuid::Uuid;

/// Every capability Azure Sphere documents, typed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub allowed_connections: Vec<ConnectionTarget>,
    pub allowed_tcp_server_ports: Vec<u16>,
    pub allowed_udp_server_ports: Vec<u16>,
    pub allowed_application_connections: Vec<Uuid>,
    pub gpio: Vec<PeripheralRef>,
    pub uart: Vec<PeripheralRef>,
    pub i2c_master: Vec<PeripheralRef>,
    pub spi_master: Vec<PeripheralRef>,
    pub adc: Vec<PeripheralRef>,
    pub pwm: Vec<PeripheralRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutable_storage: Option<MutableStorage>,
    /// The tenant the app authenticates as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_authentication: Option<Uuid>,
    pub power_controls: Vec<PowerControl>,
    pub cert_store: bool,
    pub software_update_deferral: bool,
    pub system_event_notifications: bool,
    pub system_time: bool,
    pub time_sync_config: bool,
    pub wifi_config: bool,
    pub enterprise_wifi_config: bool,
    pub network_config: bool,
    pub dhcp_service: bool,
    pub sntp_service: bool,
    pub read_network_proxy_config: bool,
    pub heap_mem_stats: bool,
}

impl Capabilities {
    /// The peripheral list of one kind.
    pub fn peripherals(&self, kind: PeripheralKind) -> &[PeripheralRef] {
        match kind {
            PeripheralKind::Gpio => &self.gpio,
            PeripheralKind::Uart => &self.uart,
            PeripheralKind::I2cMaster => &self.i2c_master,
            PeripheralKind::SpiMaster => &self.spi_master,
            PeripheralKind::Adc => &self.adc,
            PeripheralKind::Pwm => &self.pwm,
        }
    }

    pub(super) fn peripherals_mut(&mut self, kind: PeripheralKind) -> &mut Vec<PeripheralRef> {
        match kind {
            PeripheralKind::Gpio => &mut self.gpio,
            PeripheralKind::Uart => &mut self.uart,
            PeripheralKind::I2cMaster => &mut self.i2c_master,
            PeripheralKind::SpiMaster => &mut self.spi_master,
            PeripheralKind::Adc => &mut self.adc,
            PeripheralKind::Pwm => &mut self.pwm,
        }
    }
}

/// `MutableStorage`: a private persistent directory with a hard quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MutableStorage {
    #[serde(rename = "SizeKB")]
    pub size_kb: u32,
}

impl MutableStorage {
    /// 1 GiB: larger than any embedded flash budget, so a bigger value is a typo or an attack.
    pub const MAX_SIZE_KB: u64 = 1024 * 1024;
}

/// The peripheral capabilities, each a list of hardware-definition names or raw values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PeripheralKind {
    Gpio,
    Uart,
    I2cMaster,
    SpiMaster,
    Adc,
    Pwm,
}

impl PeripheralKind {
    pub const ALL: [PeripheralKind; 6] = [
        PeripheralKind::Gpio,
        PeripheralKind::Uart,
        PeripheralKind::I2cMaster,
        PeripheralKind::SpiMaster,
        PeripheralKind::Adc,
        PeripheralKind::Pwm,
    ];

    /// The manifest key, which is also the hardware-definition `Type`.
    pub fn key(self) -> &'static str {
        match self {
            PeripheralKind::Gpio => "Gpio",
            PeripheralKind::Uart => "Uart",
            PeripheralKind::I2cMaster => "I2cMaster",
            PeripheralKind::SpiMaster => "SpiMaster",
            PeripheralKind::Adc => "Adc",
            PeripheralKind::Pwm => "Pwm",
        }
    }
}

impl fmt::Display for PeripheralKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One peripheral entry: `"$SAMPLE_LED"` (high-level apps) or a raw value (`8`, `"ISU0"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeripheralRef {
    /// A hardware-definition name, written with a leading `$` in the manifest.
    Named(String),
    RawNumber(u32),
    RawText(String),
}

impl fmt::Display for PeripheralRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeripheralRef::Named(name) => write!(f, "${name}"),
            PeripheralRef::RawNumber(value) => write!(f, "{value}"),
            PeripheralRef::RawText(value) => f.write_str(value),
        }
    }
}

impl Serialize for PeripheralRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PeripheralRef::RawNumber(value) => serializer.serialize_u32(*value),
            other => serializer.collect_str(other),
        }
    }
}

/// One `AllowedConnections` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionTarget {
    /// A host name, lower-cased (DNS is case-insensitive).
    Host(String),
    /// `*.example.com`: any name below `example.com` (stored without the `*.`).
    WildcardHost(String),
    Ip(IpAddr),
    /// A DNS-SD service instance such as `_sample._tcp.local`.
    DnsSd(String),
}

impl fmt::Display for ConnectionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionTarget::Host(name) | ConnectionTarget::DnsSd(name) => f.write_str(name),
            ConnectionTarget::WildcardHost(suffix) => write!(f, "*.{suffix}"),
            ConnectionTarget::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for ConnectionTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `PowerControls` values Azure Sphere documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PowerControl {
    ForcePowerDown,
    ForceReboot,
    SetPowerProfile,
}

impl PowerControl {
    pub(super) const ALL: [(&'static str, PowerControl); 3] = [
        ("ForcePowerDown", PowerControl::ForcePowerDown),
        ("ForceReboot", PowerControl::ForceReboot),
        ("SetPowerProfile", PowerControl::SetPowerProfile),
    ];
}

impl fmt::Display for PowerControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = PowerControl::ALL.iter().find(|(_, control)| control == self).map_or("", |(name, _)| name);
        f.write_str(name)
    }
}
