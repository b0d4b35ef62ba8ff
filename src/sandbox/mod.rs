//! A throwaway systemd, booted as PID 1 of new PID + mount + UTS + cgroup namespaces, with its
//! own journald and D-Bus system bus. `selfheal demo` and the integration tests use it.
//!
//! Safety (a namespaced systemd that loaded the host's units once wiped the host's /tmp through
//! systemd-tmpfiles): systemd only ever loads the units in our own
//! directory (SYSTEMD_UNIT_PATH), with stub targets, so nothing like systemd-tmpfiles can run
//! against the host's file systems; /run and /etc/systemd/system (where `enable` and `mask`
//! write) are private tmpfs; journald is volatile and does not touch /dev/log. The sandbox gets its own cgroup, and dropping it kills its PID 1 with
//! SIGKILL, which ends every process inside.

pub(crate) mod demo;
pub(crate) mod demo_service;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const STUB_TARGETS: [&str; 8] = [
    "sysinit", "basic", "shutdown", "local-fs", "sockets", "timers", "paths", "slices",
];
/// Where a Debian tree keeps systemd's units and binary (`/lib` is a link to it on merged-/usr
/// systems, and is the path itself on the others).
const SYSTEM_UNITS: &str = "lib/systemd/system";
const SYSTEMD: &str = "lib/systemd/systemd";
/// Units made by `StartTransientUnit` (retry and cascade timers, `systemd-run`): first on the
/// unit path, or every one of them vanishes at the next `daemon-reload`.
const TRANSIENT_UNITS: &str = "/run/systemd/transient";
/// Names the temp dir and the cgroups of every sandbox.
const SANDBOX_PREFIX: &str = "selfheal-sandbox-";

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupLayout {
    /// cgroup2 mounted on /sys/fs/cgroup (most current distributions).
    Unified,
    /// v1 controllers plus /sys/fs/cgroup/unified and /sys/fs/cgroup/systemd.
    Hybrid,
}

impl CgroupLayout {
    fn detect() -> anyhow::Result<CgroupLayout> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let fs_at = |target: &str| {
            mounts.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let dash = fields.iter().position(|f| *f == "-")?;
                (fields.get(4) == Some(&target))
                    .then(|| fields.get(dash + 1).map(|s| (*s).to_owned()))?
            })
        };
        match (
            fs_at("/sys/fs/cgroup").as_deref(),
            fs_at("/sys/fs/cgroup/systemd").as_deref(),
        ) {
            (Some("cgroup2"), _) => Ok(CgroupLayout::Unified),
            (_, Some("cgroup")) => Ok(CgroupLayout::Hybrid),
            _ => bail!(
                "unsupported cgroup layout: neither cgroup2 on /sys/fs/cgroup nor a name=systemd hierarchy"
            ),
        }
    }

    /// The host cgroup directories the sandbox's launcher joins.
    fn sandbox_cgroups(self, id: &str) -> Vec<PathBuf> {
        match self {
            CgroupLayout::Unified => vec![PathBuf::from(format!("/sys/fs/cgroup/{id}"))],
            CgroupLayout::Hybrid => vec![
                PathBuf::from(format!("/sys/fs/cgroup/systemd/{id}")),
                PathBuf::from(format!("/sys/fs/cgroup/unified/{id}")),
            ],
        }
    }
}

/// Which systemd a sandbox boots.
#[derive(Debug, Clone, Default)]
pub enum SandboxSystemd {
    /// The host's own systemd, on the host's file system.
    #[default]
    Host,
    /// The systemd of another Debian tree (Debian 13's 257 on a Debian 12 host: `bootstrap
    /// test` makes one with mmdebstrap), chrooted into it. The host's `/tmp` (where the
    /// sandbox's own files live) and each of `binds` appear inside at the same paths.
    Tree { root: PathBuf, binds: Vec<PathBuf> },
}

/// A running sandboxed systemd.
pub struct Sandbox {
    /// Host PID of the sandbox's PID 1.
    pid: u32,
    launcher: Child,
    cgroups: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Boots the host's systemd in a sandbox: see `boot_with`.
    pub fn boot(selfheal: &Path) -> anyhow::Result<Sandbox> {
        Sandbox::boot_with(selfheal, &SandboxSystemd::Host)
    }

    /// Boots a sandbox whose unit directory holds the stubs plus journald and D-Bus, and waits
    /// until systemd reports `running`. `selfheal` is the binary whose hidden `sandbox-init`
    /// does the mounts inside the namespaces.
    pub fn boot_with(selfheal: &Path, systemd: &SandboxSystemd) -> anyhow::Result<Sandbox> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the sandbox needs root (namespaces, mounts, cgroups)");
        }
        let layout = CgroupLayout::detect()?;
        // The owner's PID in the name lets a later sandbox sweep what a dead owner left.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SANDBOX_PREFIX}{}-", std::process::id()))
            .tempdir()?;
        let units = dir.path().join("units");
        let tree = match systemd {
            SandboxSystemd::Host => Path::new("/"),
            SandboxSystemd::Tree { root, .. } => root.as_path(),
        };
        write_base_units(&tree.join(SYSTEM_UNITS), &units)?;
        let id = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("temp dir without a name")?;
        sweep_stale_cgroups(layout);
        let cgroups = layout.sandbox_cgroups(&id);
        for cgroup in &cgroups {
            std::fs::create_dir_all(cgroup)
                .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        }
        let procs: Vec<CString> = cgroups
            .iter()
            .map(|c| CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()))
            .collect::<Result<_, _>>()?;
        let log = std::fs::File::create(dir.path().join("console.log"))?;
        let mut command = Command::new("unshare");
        command
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--cgroup",
                "--kill-child",
                "--mount-proc",
                "--",
            ])
            .arg(selfheal)
            .arg("sandbox-init")
            .arg("--units")
            .arg(&units);
        if layout == CgroupLayout::Unified {
            command.arg("--unified-only");
        }
        if let SandboxSystemd::Tree { root, binds } = systemd {
            command.arg("--root").arg(root);
            for bind in binds {
                command.arg("--bind").arg(bind);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Join the sandbox cgroups before unshare, so the new cgroup namespace is rooted there
        // and two sandboxes never share unit cgroups. And if we die without dropping the
        // sandbox, unshare gets SIGKILL, and its --kill-child takes the namespace down with it.
        // SAFETY: pre_exec runs between fork and exec; the closure makes only
        // async-signal-safe calls (prctl, open, write, close) on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                    libc::close(fd);
                    if written < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let launcher = command.spawn().context("starting unshare")?;
        let mut sandbox = Sandbox {
            pid: 0,
            launcher,
            cgroups,
            dir,
        };
        sandbox.pid = sandbox.find_init()?;
        sandbox.wait_running(Duration::from_secs(20))?;
        Ok(sandbox)
    }

    /// unshare forks once; its only child is the sandbox's PID 1.
    fn find_init(&mut self) -> anyhow::Result<u32> {
        let unshare = self.launcher.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                return Ok(pid);
            }
            if let Some(status) = self.launcher.try_wait()? {
                bail!(
                    "the sandbox exited at once ({status}): {}",
                    self.console_log()
                );
            }
            if Instant::now() > deadline {
                bail!("the sandbox's PID 1 did not appear");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_running(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self
                .command("systemctl")
                .arg("is-system-running")
                .output()?;
            let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "sandbox systemd is {state:?} after {timeout:?}: {}",
                    self.console_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory systemd loads units from (a host path, visible inside too).
    pub fn unit_dir(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    /// A scratch directory that lives as long as the sandbox.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host PID of the sandbox's systemd.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A command that runs inside the sandbox's mount, PID and cgroup namespaces (the cgroup
    /// one too, so `/proc/PID/cgroup` reads as systemd inside sees it).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.pid.to_string())
            // Its root and working directory too: entering a mount namespace otherwise starts
            // at that namespace's real root, outside a chroot the sandbox (or its host) runs in.
            .args(["-m", "-p", "-C", "-r", "-w", "--"])
            .arg(program);
        command
    }

    /// Runs `systemctl ARGS` inside; fails with its stderr when it fails.
    pub fn systemctl<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = self.command("systemctl").args(args).output()?;
        checked(&output)
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn property(&self, unit: &str, property: &str) -> anyhow::Result<String> {
        Ok(self
            .systemctl(["show", "-P", property, unit])?
            .trim()
            .to_owned())
    }

    /// Writes a unit file into the sandbox's unit directory and reloads systemd.
    pub fn add_unit(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        std::fs::write(self.unit_dir().join(name), contents)?;
        self.systemctl(["daemon-reload"]).map(drop)
    }

    /// What systemd printed on its console (for error messages).
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

fn checked(output: &Output) -> anyhow::Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        bail!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SIGKILL to the namespace's PID 1 ends every process in it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        for cgroup in &self.cgroups {
            remove_cgroup_tree(cgroup);
        }
    }
}

/// Removes cgroups of sandboxes whose owner process died without dropping them (a booting
/// sandbox's cgroup is empty for a moment, so emptiness alone does not mean stale).
fn sweep_stale_cgroups(layout: CgroupLayout) {
    for parent in layout.sandbox_cgroups("") {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name
                .strip_prefix(SANDBOX_PREFIX)
                .and_then(|rest| rest.split('-').next());
            if owner.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                remove_empty_cgroup_tree(&entry.path());
            }
        }
    }
}

/// Removes a cgroup tree leaf first, without waiting. The kernel refuses to remove a cgroup
/// that still has processes or children, so only dead parts go.
fn remove_empty_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes a sandbox's cgroup tree after SIGKILL, giving its processes a moment to leave.
fn remove_cgroup_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        remove_empty_cgroup_tree(dir);
        if !dir.exists() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The stub targets, journald (volatile, no /dev/log) and D-Bus, the last two from the units
/// of the systemd that boots (`system_units`).
fn write_base_units(system_units: &Path, units: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(units)?;
    for target in STUB_TARGETS {
        std::fs::write(
            units.join(format!("{target}.target")),
            format!("[Unit]\nDescription=sandbox stub {target}\n"),
        )?;
    }
    std::fs::write(
        units.join("default.target"),
        "[Unit]\nDescription=sandbox default\nWants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service dbus.socket dbus.service\n",
    )?;
    for name in ["dbus.socket", "dbus.service", "systemd-journald.socket"] {
        std::fs::copy(system_units.join(name), units.join(name))
            .with_context(|| format!("copying {name}"))?;
    }
    let dev_log = std::fs::read_to_string(system_units.join("systemd-journald-dev-log.socket"))?;
    let dev_log: String = dev_log
        .lines()
        .filter(|l| !l.starts_with("Symlinks="))
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(units.join("systemd-journald-dev-log.socket"), dev_log)?;
    let journald = std::fs::read_to_string(system_units.join("systemd-journald.service"))?;
    let volatile = "ExecStartPre=/bin/sh -c \"mkdir -p /run/systemd/journald.conf.d && printf '[Journal]\\\\nStorage=volatile\\\\nReadKMsg=no\\\\n' > /run/systemd/journald.conf.d/sandbox.conf\"\n";
    let journald = journald.replacen("ExecStart=", &format!("{volatile}ExecStart="), 1);
    std::fs::write(units.join("systemd-journald.service"), journald)?;
    Ok(())
}

/// What `sandbox-init` boots (its arguments, as plain values).
pub struct Boot {
    /// The unit directory systemd loads (and nothing else).
    pub units: PathBuf,
    /// Mount only cgroup2 (pure cgroup v2 host).
    pub unified_only: bool,
    /// Boot the systemd of this Debian tree, chrooted into it (cgroup2 only).
    pub root: Option<PathBuf>,
    /// Host directories that appear at the same path inside the tree.
    pub bind: Vec<PathBuf>,
}

/// The refusal of `sandbox-init` anywhere but as PID 1 of a fresh PID namespace.
#[derive(Debug, thiserror::Error)]
#[error(
    "sandbox-init is internal to `selfheal demo` and the tests: it must be PID 1 of a fresh PID namespace, and is PID {0} here; refusing to mount over /run and /sys/fs/cgroup"
)]
pub struct NotPidOne(pub u32);

/// PID 1 of the new namespaces, before systemd: private mounts, then exec systemd.
///
/// It mounts over `/run` and `/sys/fs/cgroup`: run by hand on a real host it would break the
/// host. Only the first process of a new PID namespace has PID 1 (the host's init never runs
/// selfheal), so anything else is refused before the first mount.
pub fn init(boot: &Boot) -> anyhow::Result<()> {
    if std::process::id() != 1 {
        return Err(NotPidOne(std::process::id()).into());
    }
    mount_and_exec_systemd(boot)
}

fn mount_and_exec_systemd(args: &Boot) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .context("making / private")?;
    let root = args.root.as_deref().unwrap_or(Path::new("/"));
    let chrooted = root != Path::new("/");
    if chrooted {
        let bind = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to)?;
            mount(
                Some(from),
                to,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .with_context(|| format!("binding {} on {}", from.display(), to.display()))
        };
        bind(root, root)?;
        mount(
            Some("proc"),
            &root.join("proc"),
            Some("proc"),
            MsFlags::empty(),
            none,
        )
        .context("mounting the tree's /proc")?;
        for dir in ["sys", "dev", "tmp"] {
            bind(&Path::new("/").join(dir), &root.join(dir))?;
        }
        for dir in &args.bind {
            bind(dir, &root.join(dir.strip_prefix("/").unwrap_or(dir)))?;
        }
    }
    mount(
        Some("tmpfs"),
        &root.join("run"),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .context("mounting /run")?;
    // `systemctl enable`, `mask` and the like write into /etc/systemd/system: inside the
    // sandbox that is a tmpfs of its own, never the host's (nor the tree's, whose enabled
    // units must not load). It is on the unit path too, so what is enabled there reads as
    // enabled.
    mount(
        Some("tmpfs"),
        &root.join("etc/systemd/system"),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .context("mounting /etc/systemd/system")?;
    mount_cgroups(&root.join("sys/fs/cgroup"), args.unified_only || chrooted)?;
    if chrooted {
        nix::unistd::chroot(root).context("chroot into the tree")?;
        std::env::set_current_dir("/")?;
    }
    let err = Command::new(Path::new("/").join(SYSTEMD))
        // Like a real host, systemd logs to the journal (the "unit failed" entries selfheal
        // reads); before journald is up it falls back to the console log. Never kmsg: the
        // kernel, and its log, are the host's.
        .args(["--system", "--unit=default.target", "--log-target=journal"])
        .env(
            "SYSTEMD_UNIT_PATH",
            format!(
                "{TRANSIENT_UNITS}:/etc/systemd/system:{}",
                args.units.display()
            ),
        )
        .exec();
    Err(err).context("executing systemd")
}

/// The sandbox's own view of the cgroup tree on `cgroup`: cgroup2 alone (`unified_only`), or
/// the hybrid layout of a Debian 12 host (cgroup2 plus a name=systemd hierarchy).
fn mount_cgroups(cgroup: &Path, unified_only: bool) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    if unified_only {
        // The cgroup2 file system already on /sys/fs/cgroup (the host's, seen from outside
        // this cgroup namespace) must go first: mounting the same superblock on its own root
        // is EBUSY.
        nix::mount::umount2(cgroup, nix::mount::MntFlags::MNT_DETACH)
            .context("unmounting the host's /sys/fs/cgroup")?;
        mount(
            Some("cgroup2"),
            cgroup,
            Some("cgroup2"),
            MsFlags::empty(),
            none,
        )
        .context("mounting cgroup2")?;
    } else {
        mount(
            Some("cgroupfs"),
            cgroup,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=755"),
        )
        .context("mounting the cgroup tmpfs")?;
        std::fs::create_dir_all(cgroup.join("unified"))?;
        std::fs::create_dir_all(cgroup.join("systemd"))?;
        mount(
            Some("cgroup2"),
            &cgroup.join("unified"),
            Some("cgroup2"),
            MsFlags::empty(),
            none,
        )
        .context("mounting cgroup2")?;
        mount(
            Some("cgroup"),
            &cgroup.join("systemd"),
            Some("cgroup"),
            MsFlags::empty(),
            Some("none,name=systemd"),
        )
        .context("mounting name=systemd")?;
    }
    Ok(())
}

/// A TCP port nothing listens on right now (sandboxes share the host's network).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `ready` until it holds, or fails after `timeout`.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
