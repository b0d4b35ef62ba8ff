//! What a unit's cgroup says: its processes, its memory, its pressure. Both layouts are read:
//! the unified one (cgroup v2 on `/sys/fs/cgroup`) and the hybrid one (v1 controllers, with
//! systemd's tree on `/sys/fs/cgroup/systemd` and `/sys/fs/cgroup/unified`).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// How many cgroups below the unit's are walked for processes.
const MAX_CGROUPS: usize = 64;

/// The memory of a unit's cgroup.
#[derive(Debug, Clone, Serialize)]
// Every field says its unit in its JSON name, as `memory.stat` readers expect.
#[allow(clippy::struct_field_names)]
pub(crate) struct CgroupMemory {
    pub current_bytes: u64,
    /// The most it used since it started, where the kernel keeps it.
    pub peak_bytes: Option<u64>,
    /// Its limit, when it has one.
    pub max_bytes: Option<u64>,
    /// Anonymous memory (the heap), page cache, kernel memory, tmpfs/shared memory.
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
}

/// Pressure stall information of one resource: the share of the last 10 and 60 s in which
/// some (or all) tasks waited for it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Pressure {
    /// `cpu`, `memory` or `io`.
    pub resource: String,
    /// `cgroup` (the unit's own) or `host`.
    pub scope: String,
    pub some_avg10: f64,
    pub some_avg60: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_avg10: Option<f64>,
}

/// The root of the unified hierarchy: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host.
fn unified_root() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        root.join("unified")
    }
}

/// `control_group` (absolute, as systemd names it) below `root`.
fn below(root: &Path, control_group: &str) -> PathBuf {
    root.join(control_group.trim_start_matches('/'))
}

/// The processes of the cgroup and the cgroups below it, `main_pid` first; with a gap when
/// the cgroup could not be read (then only the main process, if any).
pub(super) fn processes(control_group: &str, main_pid: u32) -> (Vec<u32>, Option<String>) {
    let trees = [
        below(&unified_root(), control_group),
        below(Path::new("/sys/fs/cgroup/systemd"), control_group),
    ];
    let mut pids = Vec::new();
    let Some(tree) = trees
        .iter()
        .find(|tree| !control_group.is_empty() && tree.join("cgroup.procs").exists())
    else {
        let gap = format!("the process list of cgroup {control_group:?} could not be read");
        return (
            (main_pid != 0).then_some(main_pid).into_iter().collect(),
            Some(gap),
        );
    };
    let mut cgroups = vec![tree.clone()];
    let mut walked = 0;
    while let Some(cgroup) = cgroups.pop() {
        walked += 1;
        if let Ok(procs) = std::fs::read_to_string(cgroup.join("cgroup.procs")) {
            pids.extend(
                procs
                    .lines()
                    .filter_map(|pid| pid.trim().parse::<u32>().ok()),
            );
        }
        if let Ok(children) = std::fs::read_dir(&cgroup) {
            cgroups.extend(
                children
                    .flatten()
                    .filter(|child| child.file_type().is_ok_and(|kind| kind.is_dir()))
                    .map(|child| child.path())
                    .take(MAX_CGROUPS.saturating_sub(walked + cgroups.len())),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    if let Some(at) = pids.iter().position(|pid| *pid == main_pid) {
        pids.remove(at);
        pids.insert(0, main_pid);
    }
    (pids, None)
}

/// The cgroup's memory: the unified hierarchy's `memory.*` files, else the v1 memory
/// controller's cgroup of `pid` (which need not mirror the unit's path).
pub(super) fn memory(control_group: &str, pid: u32) -> Option<CgroupMemory> {
    let unified = below(&unified_root(), control_group);
    if let Some(current) = number(&unified.join("memory.current")) {
        let stat = read_stat(&unified.join("memory.stat"));
        return Some(CgroupMemory {
            current_bytes: current,
            peak_bytes: number(&unified.join("memory.peak")),
            max_bytes: number(&unified.join("memory.max")),
            anon_bytes: stat("anon"),
            file_bytes: stat("file"),
            kernel_bytes: stat("kernel").or_else(|| Some(stat("slab")? + stat("kernel_stack")?)),
            shmem_bytes: stat("shmem"),
        });
    }
    let v1 = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            controllers
                .split(',')
                .any(|controller| controller == "memory")
                .then(|| below(Path::new("/sys/fs/cgroup/memory"), path))
        })?;
    let stat = read_stat(&v1.join("memory.stat"));
    Some(CgroupMemory {
        current_bytes: number(&v1.join("memory.usage_in_bytes"))?,
        peak_bytes: number(&v1.join("memory.max_usage_in_bytes")),
        // v1 says "no limit" with a huge number.
        max_bytes: number(&v1.join("memory.limit_in_bytes")).filter(|max| *max < 1 << 62),
        anon_bytes: stat("total_rss"),
        file_bytes: stat("total_cache"),
        kernel_bytes: number(&v1.join("memory.kmem.usage_in_bytes")),
        shmem_bytes: stat("total_shmem"),
    })
}

/// `cpu`, `memory` and `io` pressure: the cgroup's, else the host's.
pub(super) fn pressure(control_group: &str) -> Vec<Pressure> {
    let cgroup = below(&unified_root(), control_group);
    ["cpu", "memory", "io"]
        .into_iter()
        .filter_map(|resource| {
            let own = cgroup.join(format!("{resource}.pressure"));
            let (text, scope) = match std::fs::read_to_string(&own) {
                Ok(text) if !control_group.is_empty() => (text, "cgroup"),
                _ => (
                    std::fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?,
                    "host",
                ),
            };
            parse_pressure(resource, scope, &text)
        })
        .collect()
}

/// `some avg10=1.00 avg60=0.50 avg300=0.10 total=…` and `full …` lines.
fn parse_pressure(resource: &str, scope: &str, text: &str) -> Option<Pressure> {
    let averages = |kind: &str| {
        let line = text.lines().find(|line| line.starts_with(kind))?;
        let value = |name: &str| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))?
                .parse::<f64>()
                .ok()
        };
        Some((value("avg10")?, value("avg60")?))
    };
    let (some_avg10, some_avg60) = averages("some")?;
    Some(Pressure {
        resource: resource.to_owned(),
        scope: scope.to_owned(),
        some_avg10,
        some_avg60,
        full_avg10: averages("full").map(|(avg10, _)| avg10),
    })
}

/// A file holding one number (`max` is no number: no limit).
fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `memory.stat` file as a lookup of its `key value` lines.
fn read_stat(path: &Path) -> impl Fn(&str) -> Option<u64> + use<> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    move |key: &str| {
        text.lines().find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok()).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_lines_are_read() {
        let text = "some avg10=12.50 avg60=3.00 avg300=0.10 total=123\nfull avg10=1.25 avg60=0.00 avg300=0.00 total=7\n";
        let pressure = parse_pressure("memory", "cgroup", text).unwrap();
        assert!((pressure.some_avg10 - 12.5).abs() < f64::EPSILON);
        assert!((pressure.some_avg60 - 3.0).abs() < f64::EPSILON);
        assert_eq!(pressure.full_avg10, Some(1.25));
        assert!(parse_pressure("cpu", "host", "nonsense").is_none());
    }
}
