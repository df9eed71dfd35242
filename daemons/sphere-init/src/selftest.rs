//! `sphere.selftest=1`: facts about the running system, printed as `sphere-init: fact K=V`
//! console lines for tests/boot-test.sh (the device has no shell to ask).

use std::io::{Read, Write};
use std::path::Path;

use crate::cmdline::Cmdline;
use crate::log::Log;

fn c_field(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Landlock ABI version via landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
/// a negative value is -errno (EOPNOTSUPP: built but disabled; ENOSYS: not built).
// c_long is i32 on armv7 and i64 on x86_64: the conversion is only useless on the host.
#[allow(clippy::useless_conversion)]
pub fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a NULL attribute pointer and size 0 this syscall reads and writes no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 { -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { i64::from(rc) }
}

/// Looks `symbol` up in a kernel .config text: `y`/`m`/a value, `not-set`, or `absent`.
pub fn config_value(config: &str, symbol: &str) -> String {
    let set = format!("{symbol}=");
    let unset = format!("# {symbol} is not set");
    for line in config.lines() {
        if let Some(value) = line.strip_prefix(&set) {
            return value.to_string();
        }
        if line == unset {
            return "not-set".to_string();
        }
    }
    "absent".to_string()
}

fn read_config_gz() -> Result<String, String> {
    let file = std::fs::File::open("/proc/config.gz").map_err(|e| format!("/proc/config.gz: {e}"))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(|e| format!("/proc/config.gz: {e}"))?;
    Ok(text)
}

/// Increments the boot counter on the data partition (write to temp, fsync, rename, fsync
/// the directory), returning the new value.
pub fn bump_boot_count(dir: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("boot-count");
    let old = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    let new = old.saturating_add(1);
    let tmp = dir.join("boot-count.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{new}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(new)
}

/// Facts printed right after mounts and network, before services start.
pub fn early_facts(log: &mut Log, cmdline: &Cmdline, data_dir: Option<&Path>) {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: passing a valid pointer to a utsname.
    if unsafe { libc::uname(&mut uts) } == 0 {
        log.fact("kernel-release", &c_field(&uts.release));
        log.fact("kernel-version", &c_field(&uts.version));
        log.fact("machine", &c_field(&uts.machine));
    }
    log.fact("cmdline", std::fs::read_to_string("/proc/cmdline").unwrap_or_default().trim());
    match read_config_gz() {
        Ok(config) => {
            let count = config.lines().filter(|l| l.starts_with("CONFIG_")).count();
            log.fact("config-symbols", &count.to_string());
            for symbol in cmdline.get("sphere.selftest.config").unwrap_or_default().split(',').filter(|s| !s.is_empty())
            {
                log.fact(&format!("config.{symbol}"), &config_value(&config, symbol));
            }
        }
        Err(err) => log.fact("config-symbols", &format!("unavailable ({err})")),
    }
    log.fact("landlock-abi", &landlock_abi().to_string());
    let _ = std::fs::create_dir_all("/sys/kernel/security");
    let _ = nix::mount::mount(
        Some("securityfs"),
        "/sys/kernel/security",
        Some("securityfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    if let Ok(lsm) = std::fs::read_to_string("/sys/kernel/security/lsm") {
        log.fact("lsm", lsm.trim());
    }
    for line in std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines() {
        log.fact("mount", line);
    }
    match data_dir {
        Some(dir) => match bump_boot_count(&dir.join("selftest")) {
            Ok(n) => log.fact("boot-count", &n.to_string()),
            Err(err) => log.fact("boot-count", &format!("error ({err})")),
        },
        None => log.fact("boot-count", "no-data-partition"),
    }
}

/// Resident memory of every user-space process (kernel threads have no VmRSS).
pub fn rss_facts(log: &mut Log) {
    let mut total = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
        let (Some(comm), Some(rss)) = (field("Name:"), field("VmRSS:")) else {
            continue;
        };
        let kib = rss.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        total += kib;
        rows.push((pid, comm, kib));
    }
    rows.sort();
    for (pid, comm, kib) in rows {
        log.fact("rss", &format!("pid={pid} comm={comm} kib={kib}"));
    }
    log.fact("rss-total-kib", &total.to_string());
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        for key in ["MemTotal:", "MemAvailable:"] {
            if let Some(v) = meminfo.lines().find_map(|l| l.strip_prefix(key)) {
                log.fact(&format!("meminfo.{}", key.trim_end_matches(':')), v.trim());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "#\n# Automatically generated\nCONFIG_SECURITY_LANDLOCK=y\n\
        # CONFIG_MODULES is not set\nCONFIG_LOCALVERSION=\"-opensphere\"\n";

    #[test]
    fn config_lookup() {
        assert_eq!(config_value(CONFIG, "CONFIG_SECURITY_LANDLOCK"), "y");
        assert_eq!(config_value(CONFIG, "CONFIG_MODULES"), "not-set");
        assert_eq!(config_value(CONFIG, "CONFIG_LOCALVERSION"), "\"-opensphere\"");
        assert_eq!(config_value(CONFIG, "CONFIG_SECURITY"), "absent");
    }

    #[test]
    fn boot_count_persists_and_increments() {
        let dir = std::env::temp_dir().join(format!("sphere-init-boots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(bump_boot_count(&dir).expect("first"), 1);
        assert_eq!(bump_boot_count(&dir).expect("second"), 2);
        assert_eq!(std::fs::read_to_string(dir.join("boot-count")).expect("read"), "2\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gzip_decoding_works_with_the_pure_rust_backend() {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(CONFIG.as_bytes()).expect("write");
        let gz = enc.finish().expect("finish");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).expect("decode");
        assert_eq!(text, CONFIG);
    }
}
