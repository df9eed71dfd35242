//! `sphere net rules APP` and `sphere net blocked`: what the device's firewall (sphere-netd)
//! enforces for an app, and what it blocked (see `sphere-netd-api`, docs/network-firewall.md).

use crate::output::{CommandError, Output};
use clap::{Args, Subcommand};
use serde_json::json;
use sphere_netd_api::{AppRules, BlockedAttempt, NetworkProxy};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum NetCommand {
    /// Show the effective firewall rules of an app: its addresses, what its manifest allows,
    /// the addresses its DNS answers added (with time left) and its nftables chains.
    #[command(after_help = "Examples:\n  sphere net rules 7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14\n  \
        sphere --json net rules 7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14 | jq .resolved\n\n\
        An app reaches only the IP literals and the answers to the names its AllowedConnections lists; \
        a name-derived address leaves the list when its (bounded) TTL runs out.")]
    Rules {
        /// The app's ComponentId.
        component_id: String,
        #[command(flatten)]
        netd: NetdArgs,
    },
    /// Show blocked attempts of every app, newest first (aggregated per destination and port,
    /// rate-limited at the source; kept across reboots).
    #[command(after_help = "Examples:\n  sphere net blocked\n  \
        sphere --json net blocked | jq '.blocked[] | select(.kind == \"dns\")'\n\n\
        Kinds: outbound (to a destination the app may not reach), inbound (to a port it does not serve), \
        host (to a host daemon), dns (a name it may not resolve: answered NXDOMAIN), dns-rebind (an allowed \
        public name answered with a private address: refused).")]
    Blocked {
        /// Show only this app's attempts.
        #[arg(long, value_name = "COMPONENT_ID")]
        app: Option<String>,
        #[command(flatten)]
        netd: NetdArgs,
    },
}

/// How to reach the device's firewall daemon.
#[derive(Args)]
pub struct NetdArgs {
    /// sphere-netd's peer-to-peer D-Bus socket.
    #[arg(long, value_name = "PATH", default_value = sphere_netd_api::P2P_SOCKET)]
    pub socket: PathBuf,
    /// Use the system bus instead of the socket.
    #[arg(long)]
    pub system_bus: bool,
}

pub fn run(command: NetCommand, output: &Output) -> Result<(), CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(format!("cannot start the client runtime: {e}")))?
        .block_on(dispatch(command, output))
}

async fn dispatch(command: NetCommand, output: &Output) -> Result<(), CommandError> {
    match command {
        NetCommand::Rules { component_id, netd } => {
            let rules = connect(&netd).await?.rules(&component_id).await.map_err(refused)?;
            output.print(&rules, || describe_rules(&rules));
        }
        NetCommand::Blocked { app, netd } => {
            let mut blocked = connect(&netd).await?.blocked().await.map_err(refused)?;
            if let Some(app) = &app {
                blocked.retain(|b| &b.component_id == app);
            }
            output.print(&json!({ "blocked": &blocked }), || describe_blocked(&blocked));
        }
    }
    Ok(())
}

fn describe_rules(rules: &AppRules) -> String {
    let c = &rules.compartment;
    let none = |list: String| if list.is_empty() { "none".to_owned() } else { list };
    let mut lines = vec![
        format!("app {}", c.component_id),
        format!("  interface   {} (app side eth0: {}, {})", c.host_interface, c.address_v4, c.address_v6),
        format!("  dns proxy   {}, {}", c.gateway_v4, c.gateway_v6),
        format!(
            "  outbound    {}",
            if rules.allowed_connections.is_empty() {
                "none (no AllowedConnections)".to_owned()
            } else {
                rules.allowed_connections.join(", ")
            }
        ),
        format!(
            "  tcp server  {}",
            none(rules.tcp_server_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
        ),
        format!(
            "  udp server  {}",
            none(rules.udp_server_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
        ),
    ];
    if rules.resolved.is_empty() {
        lines.push("  resolved    none yet".to_owned());
    } else {
        lines.push("  resolved".to_owned());
        for r in &rules.resolved {
            lines.push(format!("    {:<40} {:<39} {} s left", r.name, r.address, r.expires_in));
        }
    }
    lines.push("  nftables (table inet opensphere)".to_owned());
    lines.extend(rules.nft.iter().map(|l| format!("    {l}")));
    lines.join("\n")
}

fn describe_blocked(blocked: &[BlockedAttempt]) -> String {
    if blocked.is_empty() {
        return "no blocked attempts".to_owned();
    }
    let mut lines = vec![format!(
        "{:<36}  {:<10}  {:<6}  {:<40}  {:>5}  {:>6}  {:<10}  {:<10}",
        "APP", "KIND", "PROTO", "DESTINATION", "PORT", "COUNT", "FIRST", "LAST"
    )];
    for b in blocked {
        lines.push(format!(
            "{:<36}  {:<10}  {:<6}  {:<40}  {:>5}  {:>6}  {:<10}  {:<10}",
            b.component_id, b.kind, b.protocol, b.destination, b.port, b.count, b.first_seen, b.last_seen
        ));
    }
    lines.join("\n")
}

async fn connect(netd: &NetdArgs) -> Result<NetworkProxy<'static>, CommandError> {
    let connection = if netd.system_bus {
        zbus::Connection::system().await.map_err(|e| unreachable(&e.to_string(), None))?
    } else {
        let stream = tokio::net::UnixStream::connect(&netd.socket)
            .await
            .map_err(|e| unreachable(&e.to_string(), Some(&netd.socket)))?;
        zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|e| unreachable(&e.to_string(), Some(&netd.socket)))?
    };
    NetworkProxy::new(&connection).await.map_err(|e| unreachable(&e.to_string(), None))
}

fn unreachable(error: &str, socket: Option<&Path>) -> CommandError {
    let place = socket.map_or_else(|| "the system bus".to_owned(), |s| s.display().to_string());
    CommandError::Usage(format!("cannot reach the firewall daemon on {place}: {error} (is sphere-netd running?)"))
}

/// The daemon understood and refused (unknown app, ...): exit 1.
fn refused(error: zbus::Error) -> CommandError {
    let message = match &error {
        zbus::Error::MethodError(_, Some(detail), _) => detail.clone(),
        other => other.to_string(),
    };
    CommandError::invalid(message)
}
