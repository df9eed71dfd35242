//! Per-app cgroup: memory (no swap), pids and cpu weight, and the OOM/pids counters read back.
//!
//! The device runs cgroup v2 only: the app's cgroup is `<cgroup_parent>/<component-id>` and the
//! app is born into it (`CLONE_INTO_CGROUP`), so not even its first instruction runs unlimited.
//! Hybrid hosts (CI machines with systemd's legacy layout) have memory/pids/cpu bound to v1
//! hierarchies; there the same limits are written through v1 files under the launcher's own v1
//! cgroups, the child moves itself in before it runs app code, and the degradation is reported.

use crate::features::CgroupSupport;
use crate::spec::CgroupLimits;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const V2_ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Find how limits can be applied on this machine.
pub fn detect() -> (CgroupSupport, Option<PathBuf>) {
    let unified = [Path::new(V2_ROOT), &Path::new(V2_ROOT).join("unified")]
        .into_iter()
        .find(|root| root.join("cgroup.controllers").exists())
        .map(Path::to_path_buf);
    let available =
        unified.as_ref().and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok()).unwrap_or_default();
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|name| !available.split_whitespace().any(|have| have == **name))
        .map(|name| (*name).to_owned())
        .collect();
    if missing.is_empty() {
        return (CgroupSupport::V2, unified);
    }
    if CONTROLLERS.iter().all(|name| Path::new(V2_ROOT).join(name).join("cgroup.procs").exists()) {
        return (CgroupSupport::V1Fallback { missing_in_v2: missing }, unified);
    }
    (CgroupSupport::None, unified)
}

/// One app's cgroup(s). Kept from one run of the app to the next (creating a memory cgroup per
/// launch is slow, and each removed one lingers as a dying cgroup while page cache is charged to
/// it); counters are read relative to their values at launch, so a report describes its run.
#[derive(Debug)]
pub struct AppCgroup {
    /// v2: the app's directory. v1: one directory per controller.
    dirs: Vec<PathBuf>,
    v2: bool,
    oom_kills_at_start: u64,
    pids_max_hits_at_start: u64,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", path.display())))
}

/// The app's cgroup directory, made on its first launch.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", dir.display())))
}

/// This process's cgroup path in the v1 hierarchy of `controller` (from /proc/self/cgroup).
fn own_v1_cgroup(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        names.split(',').any(|name| name == controller).then(|| path.to_owned())
    })
}

/// On a v1 host, the app's cgroup of one controller: below the launcher's own.
fn v1_dir(controller: &str, component_id: &str) -> PathBuf {
    let own = own_v1_cgroup(controller).unwrap_or_else(|| "/".to_owned());
    Path::new(V2_ROOT).join(controller).join(own.trim_start_matches('/')).join("sphere-sandbox").join(component_id)
}

impl AppCgroup {
    /// Create (first launch) or reuse the app's cgroup and write its limits.
    pub fn create(
        support: &CgroupSupport,
        parent: &Path,
        component_id: &str,
        limits: &CgroupLimits,
    ) -> io::Result<Option<AppCgroup>> {
        match support {
            CgroupSupport::V2 => {
                fs::create_dir_all(parent)?;
                // The parent must delegate the controllers; harmless if it already does, and
                // the error (parent has processes of its own) is the app manager's to fix.
                let control = parent.join("cgroup.subtree_control");
                let enabled = fs::read_to_string(&control).unwrap_or_default();
                if CONTROLLERS.iter().any(|name| !enabled.split_whitespace().any(|have| have == *name)) {
                    write(&control, "+memory +pids +cpu")?;
                }
                let dir = parent.join(component_id);
                ensure_dir(&dir)?;
                write(&dir.join("memory.max"), &limits.memory_max_bytes.to_string())?;
                // Absent on a kernel without swap (ours): cgroupfs then answers a write with
                // EACCES, not ENOENT, so test for the file instead of interpreting the error.
                let swap_max = dir.join("memory.swap.max");
                if swap_max.exists() {
                    write(&swap_max, "0")?;
                }
                // memory.oom.group stays 0: the OOM killer ends the largest process of the app
                // (usually the culprit); if that is the main process the app ends as `oom_kill`.
                write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                write(&dir.join("cpu.weight"), &limits.cpu_weight.to_string())?;
                Ok(Some(AppCgroup::with_baseline(vec![dir], true)))
            }
            CgroupSupport::V1Fallback { .. } => {
                let mut dirs = Vec::new();
                for controller in CONTROLLERS {
                    let dir = v1_dir(controller, component_id);
                    ensure_dir(&dir)?;
                    dirs.push(dir);
                }
                write(&dirs[0].join("memory.limit_in_bytes"), &limits.memory_max_bytes.to_string())?;
                write(&dirs[0].join("memory.memsw.limit_in_bytes"), &limits.memory_max_bytes.to_string())
                    .or_else(ignore_missing)?;
                write(&dirs[1].join("pids.max"), &limits.pids_max.to_string())?;
                // cpu.shares 1024 is v2's weight 100.
                write(&dirs[2].join("cpu.shares"), &(u64::from(limits.cpu_weight) * 1024 / 100).max(2).to_string())?;
                Ok(Some(AppCgroup::with_baseline(dirs, false)))
            }
            CgroupSupport::None => Ok(None),
        }
    }

    /// v2: the directory to clone into. v1: `None` (the child enrols itself, see [`Self::v1_task_files`]).
    pub fn v2_dir(&self) -> Option<&Path> {
        if self.v2 { self.dirs.first().map(PathBuf::as_path) } else { None }
    }

    /// v1: the `tasks` files the child writes "0" into to move itself (its only thread).
    ///
    /// Why `tasks` and "0", not `cgroup.procs` and the pid from the launcher: moving a whole
    /// thread group takes the cgroup threadgroup lock for writing, which waits for an RCU grace
    /// period when the lock was idle (1–20 ms); the kernel skips that lock when a task moves
    /// only itself. The child is single-threaded, so its thread is the whole process.
    pub fn v1_task_files(&self) -> Vec<PathBuf> {
        if self.v2 { Vec::new() } else { self.dirs.iter().map(|dir| dir.join("tasks")).collect() }
    }

    /// OOM kills in this cgroup so far (v2 `memory.events` `oom_kill`, v1 `memory.oom_control`).
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills_total().saturating_sub(self.oom_kills_at_start)
    }

    /// Times a fork failed because `pids.max` was reached during this run.
    pub fn pids_max_hits(&self) -> u64 {
        self.pids_max_hits_total().saturating_sub(self.pids_max_hits_at_start)
    }

    fn with_baseline(dirs: Vec<PathBuf>, v2: bool) -> AppCgroup {
        let mut cgroup = AppCgroup { dirs, v2, oom_kills_at_start: 0, pids_max_hits_at_start: 0 };
        cgroup.oom_kills_at_start = cgroup.oom_kills_total();
        cgroup.pids_max_hits_at_start = cgroup.pids_max_hits_total();
        cgroup
    }

    fn oom_kills_total(&self) -> u64 {
        let (file, key) = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        read_key(&self.dirs[0].join(file), key)
    }

    fn pids_max_hits_total(&self) -> u64 {
        let dir = if self.v2 { &self.dirs[0] } else { &self.dirs[1] };
        read_key(&dir.join("pids.events"), "max")
    }

    /// Kill anything the app left behind (v2; on v1 the end of the app's pid namespace, whose
    /// init the app is, has already killed every process in it).
    pub fn kill_leftovers(&self) {
        if self.v2 {
            let _ = fs::write(self.dirs[0].join("cgroup.kill"), "1");
        }
    }
}

/// Remove an app's cgroup(s) on uninstall (the app must not be running).
pub fn remove_app(support: &CgroupSupport, parent: &Path, component_id: &str) -> io::Result<()> {
    let dirs: Vec<PathBuf> = match support {
        CgroupSupport::V2 => vec![parent.join(component_id)],
        CgroupSupport::V1Fallback { .. } => {
            CONTROLLERS.iter().map(|controller| v1_dir(controller, component_id)).collect()
        }
        CgroupSupport::None => Vec::new(),
    };
    for dir in dirs {
        match fs::remove_dir(&dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

fn ignore_missing(error: io::Error) -> io::Result<()> {
    if error.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(error) }
}

fn read_key(path: &Path, key: &str) -> u64 {
    parse_key(&fs::read_to_string(path).unwrap_or_default(), key)
}

/// The value of `key` in a flat-keyed cgroup file (`oom_kill 3`).
pub fn parse_key(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_key(events, "oom_kill"), 1);
        assert_eq!(parse_key(events, "max"), 12);
        assert_eq!(parse_key(events, "missing"), 0);
        assert_eq!(parse_key("oom_kill_disable 0\nunder_oom 0\noom_kill 4", "oom_kill"), 4);
    }
}
