//! `sphere-sandbox-bench`: app launch latency of the full sandbox against bubblewrap, side by side.
//!
//! ```text
//! sphere-sandbox-bench --exec sphere-sandbox-exec --spec SPEC.json --app APP [--runs N]
//! ```
//!
//! Latency is spawn → the app's first instruction, observed as the first byte the app writes to
//! a pipe (the app under test writes it as the first thing in `main`). Our side is what the app
//! manager does: start the `sphere-sandbox-exec` launcher with a full-sandbox spec (namespaces,
//! minimal root, storage, Landlock, seccomp, capabilities, cgroup). The other side is Debian's
//! `bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev APP` running the same static
//! binary. Runs alternate between the two so machine noise hits both alike. Also reported: the
//! launcher's resident memory while it supervises an app.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn value(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|arg| arg == flag).and_then(|index| args.get(index + 1)).cloned()
}

/// Spawn `command` with stdout on a pipe; time until the first byte arrives.
fn first_byte_latency(command: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|error| error.to_string())?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    let read = stdout.read(&mut byte).map_err(|error| error.to_string())?;
    let elapsed = start.elapsed();
    let status = child.wait().map_err(|error| error.to_string())?;
    if read != 1 || !status.success() {
        return Err(format!("no first byte (read {read}, status {status})"));
    }
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct Stats {
    median: Duration,
    p90: Duration,
    mean: Duration,
    min: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let total: Duration = samples.iter().sum();
    Stats {
        median: percentile(&samples, 0.5),
        p90: percentile(&samples, 0.9),
        mean: total / samples.len() as u32,
        min: samples[0],
    }
}

/// VmRSS and VmHWM (KiB) of a running launcher that supervises a long-running app.
fn launcher_memory(exec: &str, spec_path: &str) -> Result<(u64, u64), String> {
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path).map_err(|error| error.to_string())?)
            .map_err(|error| error.to_string())?;
    spec["args"] = serde_json::json!(["first-byte-wait"]);
    spec["stop_grace_ms"] = serde_json::json!(100);
    let wait_spec = format!("{spec_path}.wait.json");
    std::fs::write(&wait_spec, spec.to_string()).map_err(|error| error.to_string())?;
    let mut child = Command::new(exec)
        .args(["--spec", &wait_spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| error.to_string())?;
    let mut byte = [0u8; 1];
    let _ = child.stdout.take().ok_or("no stdout")?.read(&mut byte);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    let memory = (field("VmRSS:"), field("VmHWM:"));
    // SAFETY: SIGTERM to the launcher we started: it stops the app and exits.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_file(&wait_spec);
    Ok(memory)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(exec), Some(spec), Some(app)) = (value(&args, "--exec"), value(&args, "--spec"), value(&args, "--app"))
    else {
        eprintln!("usage: sphere-sandbox-bench --exec EXEC --spec SPEC.json --app APP [--runs N]");
        std::process::exit(2);
    };
    let runs: usize = value(&args, "--runs").and_then(|n| n.parse().ok()).unwrap_or(200).max(10);
    let ours = || {
        let mut command = Command::new(&exec);
        command.args(["--spec", &spec]);
        command
    };
    let bwrap = || {
        let mut command = Command::new("bwrap");
        command.args(["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]);
        command.args([app.as_str(), "first-byte"]);
        command
    };
    let direct = || {
        let mut command = Command::new(&app);
        command.arg("first-byte");
        command
    };
    // Warm both paths (page cache, storage mount, runtime dirs) before measuring.
    for _ in 0..5 {
        for (name, mut command) in [("sphere-sandbox-exec", ours()), ("bwrap", bwrap())] {
            if let Err(error) = first_byte_latency(&mut command) {
                eprintln!("sphere-sandbox-bench: {name} failed: {error}");
                std::process::exit(1);
            }
        }
    }
    let (mut ours_samples, mut bwrap_samples) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut direct_samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        for (samples, mut command) in
            [(&mut ours_samples, ours()), (&mut bwrap_samples, bwrap()), (&mut direct_samples, direct())]
        {
            match first_byte_latency(&mut command) {
                Ok(latency) => samples.push(latency),
                Err(error) => {
                    eprintln!("sphere-sandbox-bench: launch failed: {error}");
                    std::process::exit(1);
                }
            }
        }
    }
    let (ours_stats, bwrap_stats, direct_stats) = (stats(ours_samples), stats(bwrap_samples), stats(direct_samples));
    println!("launch latency, spawn -> app's first byte ({runs} runs each, interleaved, after 5 warm-up runs)");
    println!("{:<44} {:>9} {:>9} {:>9} {:>9}", "", "median", "p90", "mean", "min");
    for (name, s) in [
        ("sphere-sandbox-exec (full sandbox)", &ours_stats),
        ("bwrap --unshare-all --ro-bind / / (Debian)", &bwrap_stats),
        ("no sandbox (the app started directly)", &direct_stats),
    ] {
        println!(
            "{name:<44} {:>6.3} ms {:>6.3} ms {:>6.3} ms {:>6.3} ms",
            ms(s.median),
            ms(s.p90),
            ms(s.mean),
            ms(s.min)
        );
    }
    let ratio = ms(ours_stats.median) / ms(bwrap_stats.median);
    println!("ratio ours/bwrap (median): {ratio:.2} (goal <= 0.50: {})", if ratio <= 0.5 { "met" } else { "NOT met" });
    match launcher_memory(&exec, &spec) {
        Ok((rss, hwm)) => println!("launcher memory while supervising an app: VmRSS {rss} KiB, VmHWM {hwm} KiB"),
        Err(error) => println!("launcher memory: not measured ({error})"),
    }
}
