//! sphere-netd: the per-app network firewall daemon, a small client for it, and benchmarks.
//!
//! ```text
//! sphere-netd serve [--socket PATH | --system-bus] [--runtime-dir DIR] [--state-dir DIR]
//!                   [--upstream IP[:PORT]]... [--ttl-min SECONDS] [--ttl-max SECONDS] [--log-group N]
//! sphere-netd setup COMPONENT_ID NETNS_PATH MANIFEST_PATH [--socket PATH]
//! sphere-netd teardown COMPONENT_ID [--socket PATH]
//! sphere-netd bench-rules [--apps N] [--names N] [--runs N]   (in a scratch network namespace)
//! sphere-netd bench-dns --server IP:PORT --name NAME [--count N]
//! ```
//!
//! Arguments are parsed by hand, as in sphere-appd: the binary ships on a 16 MB flash device.

use sphere_netd::firewall::{Config, Firewall};
use sphere_netd::nft::Nft;
use sphere_netd::rules::{self, AppPolicy, Element};
use sphere_netd::telemetry::Telemetry;
use sphere_netd::{dns, nflog, service};
use sphere_netd_api::NetworkProxy;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: sphere-netd serve [--socket PATH | --system-bus] [--runtime-dir DIR] [--state-dir DIR] \
[--upstream IP[:PORT]]... [--ttl-min S] [--ttl-max S] [--log-group N]\n       sphere-netd setup COMPONENT_ID NETNS_PATH MANIFEST_PATH [--socket PATH]\n       \
sphere-netd teardown COMPONENT_ID [--socket PATH]\n       sphere-netd bench-rules [--apps N] [--names N] [--runs N]\n       \
sphere-netd bench-dns --server IP:PORT --name NAME [--count N]";

struct Args {
    socket: PathBuf,
    system_bus: bool,
    runtime_dir: PathBuf,
    state_dir: PathBuf,
    upstreams: Vec<SocketAddr>,
    ttl_min: u32,
    ttl_max: u32,
    log_group: u16,
    apps: usize,
    names: usize,
    runs: usize,
    server: Option<SocketAddr>,
    name: String,
    count: usize,
    positional: Vec<String>,
}

fn socket_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, default_port)))
        .map_err(|_| format!("\"{text}\" is not an IP address or IP:PORT"))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{what} must be a number, not \"{text}\""))
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        socket: sphere_netd_api::P2P_SOCKET.into(),
        system_bus: false,
        runtime_dir: "/run/sphere/net".into(),
        state_dir: "/var/lib/sphere/netd".into(),
        upstreams: Vec::new(),
        ttl_min: 30,
        ttl_max: 3600,
        log_group: 7,
        apps: 100,
        names: 20,
        runs: 7,
        server: None,
        name: String::new(),
        count: 1000,
        positional: Vec::new(),
    };
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--socket" => args.socket = value()?.into(),
            "--system-bus" => args.system_bus = true,
            "--runtime-dir" => args.runtime_dir = value()?.into(),
            "--state-dir" => args.state_dir = value()?.into(),
            "--upstream" => args.upstreams.push(socket_addr(&value()?, 53)?),
            "--ttl-min" => args.ttl_min = number(&value()?, "--ttl-min")?,
            "--ttl-max" => args.ttl_max = number(&value()?, "--ttl-max")?,
            "--log-group" => args.log_group = number(&value()?, "--log-group")?,
            "--apps" => args.apps = number(&value()?, "--apps")?,
            "--names" => args.names = number(&value()?, "--names")?,
            "--runs" => args.runs = number(&value()?, "--runs")?,
            "--server" => args.server = Some(socket_addr(&value()?, 53)?),
            "--name" => args.name = value()?,
            "--count" => args.count = number(&value()?, "--count")?,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => args.positional.push(word),
        }
    }
    if args.ttl_min == 0 || args.ttl_min > args.ttl_max {
        return Err("need 0 < --ttl-min <= --ttl-max".to_owned());
    }
    Ok(args)
}

/// The upstream resolvers of the host: its own /etc/resolv.conf.
fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn main() -> ExitCode {
    let mut words = std::env::args().skip(1);
    let command = words.next().unwrap_or_default();
    let result = parse(words).and_then(|args| run(&command, args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sphere-netd: {message}");
            if message.starts_with("usage") || message.starts_with("unknown") {
                eprintln!("{USAGE}");
            }
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("tokio: {e}"))
}

fn run(command: &str, mut args: Args) -> Result<(), String> {
    match command {
        "serve" => {
            if args.upstreams.is_empty() {
                args.upstreams = host_upstreams();
            }
            if args.upstreams.is_empty() {
                return Err("no upstream resolver: pass --upstream or list one in /etc/resolv.conf".to_owned());
            }
            runtime()?.block_on(serve(args))
        }
        "setup" | "teardown" => runtime()?.block_on(client(command, &args)),
        "bench-rules" => bench_rules(&args),
        "bench-dns" => runtime()?.block_on(bench_dns(&args)),
        _ => Err(format!("usage: unknown command \"{command}\"")),
    }
}

async fn serve(args: Args) -> Result<(), String> {
    sphere_netd::link::enable_forwarding().map_err(|e| format!("enable forwarding: {e}"))?;
    let mut nft = Nft::open().map_err(|e| format!("nf_tables: {e}"))?;
    // Blocked packets go to NFLOG, which needs CONFIG_NETFILTER_NETLINK_LOG; a kernel without it
    // refuses `log group` rules. Probe with one throw-away app and fall back to counters.
    let probe = AppPolicy {
        slot: rules::MAX_SLOT,
        component_id: String::new(),
        ip_literals: vec![],
        tcp_server_ports: vec![],
        udp_server_ports: vec![],
    };
    let log_group = match nft.replace(&rules::build(&[probe], Some(args.log_group), |_| Vec::new())) {
        Ok(()) => Some(args.log_group),
        Err(error) => {
            eprintln!("sphere-netd: no NFLOG in this kernel ({error}): blocked packets are counted, not itemised");
            None
        }
    };
    // Start from a table with no apps: every app is default-deny until appd sets it up.
    nft.replace(&rules::build(&[], log_group, |_| Vec::new())).map_err(|e| format!("nf_tables: {e}"))?;
    let config = Config {
        runtime_dir: args.runtime_dir.clone(),
        upstreams: args.upstreams.clone(),
        ttl_min: args.ttl_min,
        ttl_max: args.ttl_max,
        log_group,
    };
    let telemetry = Telemetry::load(Some(args.state_dir.join("blocked.json")));
    let shared = Arc::new(Mutex::new(Firewall { config, apps: Default::default(), nft, telemetry }));

    // Blocked packets: a blocking reader thread feeding the telemetry table.
    match log_group.map(nflog::LogReader::bind) {
        None => {}
        Some(Ok(reader)) => {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                loop {
                    let batch = match reader.read() {
                        Ok(batch) => batch,
                        // The kernel dropped log messages we were too slow for: keep reading.
                        Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => continue,
                        Err(error) => {
                            eprintln!("sphere-netd: blocked-packet telemetry stopped: {error}");
                            break;
                        }
                    };
                    let mut fw = shared.lock().unwrap_or_else(|p| p.into_inner());
                    for blocked in batch {
                        let owner = fw.slot_owner(blocked.slot).unwrap_or_else(|| format!("slot-{}", blocked.slot));
                        let kind = match blocked.kind.as_str() {
                            "out" => "outbound",
                            "in" => "inbound",
                            other => other,
                        };
                        fw.telemetry.record(&owner, kind, &blocked.protocol, &blocked.peer.to_string(), blocked.port);
                    }
                }
            });
        }
        Some(Err(error)) => eprintln!("sphere-netd: no blocked-packet telemetry (NFLOG): {error}"),
    }
    // Keep the telemetry on disk every few seconds (atomic replace, only when it changed).
    let saver = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Err(error) = saver.lock().unwrap_or_else(|p| p.into_inner()).telemetry.save() {
                eprintln!("sphere-netd: could not save telemetry: {error}");
            }
        }
    });
    eprintln!(
        "sphere-netd: serving (upstream {}, TTL {}..{} s)",
        args.upstreams.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "),
        args.ttl_min,
        args.ttl_max
    );
    let served = if args.system_bus {
        service::serve_system_bus(Arc::clone(&shared)).await.map_err(|e| e.to_string())
    } else {
        service::serve_p2p(Arc::clone(&shared), &args.socket).await.map_err(|e| e.to_string())
    };
    let _ = shared.lock().unwrap_or_else(|p| p.into_inner()).telemetry.save();
    served
}

async fn client(command: &str, args: &Args) -> Result<(), String> {
    let stream = tokio::net::UnixStream::connect(&args.socket)
        .await
        .map_err(|e| format!("cannot reach sphere-netd on {}: {e}", args.socket.display()))?;
    let connection = zbus::connection::Builder::unix_stream(stream).p2p().build().await.map_err(|e| e.to_string())?;
    let proxy = NetworkProxy::new(&connection).await.map_err(|e| e.to_string())?;
    match (command, args.positional.as_slice()) {
        ("setup", [id, netns, manifest]) => {
            let compartment = proxy.setup_app(id, netns, manifest).await.map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&compartment).map_err(|e| e.to_string())?);
            Ok(())
        }
        ("teardown", [id]) => proxy.teardown_app(id).await.map_err(|e| e.to_string()),
        _ => Err(format!("usage: wrong arguments for {command}")),
    }
}

/// Time a full table replacement with `apps` apps of `names` resolved addresses each.
fn bench_rules(args: &Args) -> Result<(), String> {
    let mut nft = Nft::open().map_err(|e| format!("nf_tables: {e}"))?;
    let apps: Vec<AppPolicy> = (0..args.apps as u16)
        .map(|slot| AppPolicy {
            slot,
            component_id: format!("bench-{slot}"),
            ip_literals: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, (slot % 250) as u8 + 1))],
            tcp_server_ports: vec![8080],
            udp_server_ports: vec![],
        })
        .collect();
    let names = args.names;
    let table = rules::build(&apps, Some(7), |slot| {
        (0..names)
            .map(|i| Element {
                address: IpAddr::V4(Ipv4Addr::new(198, 51, (slot / 256) as u8, (slot % 256) as u8 ^ (i as u8))),
                timeout_ms: Some(600_000),
            })
            .collect()
    });
    let mut times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let start = Instant::now();
        nft.replace(&table).map_err(|e| format!("nf_tables: {e}"))?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    nft.replace(&rules::Table::default()).map_err(|e| format!("nf_tables: {e}"))?;
    times.sort_by(f64::total_cmp);
    let rule_count: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    println!(
        "rule update: {} apps x {} hostnames ({} rules, {} set elements): median {:.2} ms, min {:.2} ms, max {:.2} ms over {} runs",
        args.apps,
        names,
        rule_count,
        table.sets.iter().map(|s| s.elements.len()).sum::<usize>(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
    Ok(())
}

/// Median round trip of `count` A queries for `name` to `server`.
async fn bench_dns(args: &Args) -> Result<(), String> {
    let server = args.server.ok_or("bench-dns needs --server")?;
    let bind: SocketAddr = if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().map_err(|_| "bind")?;
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(args.count);
    let mut buf = vec![0u8; 4096];
    for i in 0..args.count.max(1) + 20 {
        let query = dns::build_query(i as u16, &args.name, dns::TYPE_A);
        let start = Instant::now();
        socket.send(&query).await.map_err(|e| e.to_string())?;
        let len = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
            .await
            .map_err(|_| format!("no answer from {server}"))?
            .map_err(|e| e.to_string())?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        let reply = dns::parse_response(&buf[..len]).map_err(|e| format!("bad answer: {e}"))?;
        if reply.answers.is_empty() {
            return Err(format!("{server} answered {} with rcode {} and no records", args.name, reply.rcode));
        }
        if i >= 20 {
            times.push(elapsed); // the first 20 warm caches and the set
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "dns {server} {}: median {:.3} ms, p90 {:.3} ms over {} queries",
        args.name,
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times.len()
    );
    Ok(())
}
