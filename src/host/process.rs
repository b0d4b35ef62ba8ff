//! Processes addressed through pidfds: a pidfd names one process for as long as it is open,
//! so a signal can never reach a process that took over a recycled PID, and its exit can be
//! awaited with poll(2) instead of polling `/proc` on a timer.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// An open pidfd.
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: OwnedFd,
    pid: u32,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Fails with `ESRCH` when the process is gone.
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        let raw_pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor is fresh and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(raw).unwrap_or(-1)) };
        Ok(Pidfd { fd, pid })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to exactly this process. `ESRCH` means it already exited.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
        let done = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if done < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits until the process has exited or `timeout` passed; true when it exited.
    pub(crate) fn wait_exit(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
            match ready {
                0 if Instant::now() >= deadline => return Ok(false),
                0 => {} // woken early: poll again for what is left
                n if n > 0 => return Ok(true),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// How a terminate-then-kill sequence ended for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    /// It exited after SIGTERM (or was already gone).
    Terminated,
    /// It ignored SIGTERM for the whole grace period and was killed.
    Killed,
    /// It ignored SIGTERM, and `before_kill` said it may no longer be killed.
    Spared,
    /// It survived even SIGKILL (e.g. stuck in uninterruptible sleep).
    Survived,
}

/// SIGTERM to every process at once, one shared `grace` for all of them to exit, then SIGKILL
/// to those still there that `before_kill` still allows, and one short shared wait. However
/// many processes, this takes at most `grace` + 3 s.
pub(crate) fn terminate_all(
    processes: &[Pidfd],
    grace: Duration,
    before_kill: impl Fn(&Pidfd) -> bool,
) -> io::Result<Vec<Termination>> {
    let gone = |result: io::Result<()>| match result {
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(true),
        Err(err) => Err(err),
        Ok(()) => Ok(false),
    };
    let mut ended = vec![None; processes.len()];
    for (process, end) in processes.iter().zip(&mut ended) {
        if gone(process.signal(libc::SIGTERM))? {
            *end = Some(Termination::Terminated);
        }
    }
    let deadline = Instant::now() + grace;
    for (process, end) in processes.iter().zip(&mut ended) {
        if end.is_none() && process.wait_exit(deadline.saturating_duration_since(Instant::now()))? {
            *end = Some(Termination::Terminated);
        }
    }
    for (process, end) in processes.iter().zip(&mut ended) {
        if end.is_none() {
            if !before_kill(process) {
                *end = Some(Termination::Spared);
            } else if gone(process.signal(libc::SIGKILL))? {
                *end = Some(Termination::Killed);
            }
        }
    }
    // SIGKILL takes effect as soon as a process leaves the kernel; a few seconds without it
    // means it is stuck in uninterruptible sleep.
    let deadline = Instant::now() + Duration::from_secs(3);
    for (process, end) in processes.iter().zip(&mut ended) {
        if end.is_none() {
            let exited = process.wait_exit(deadline.saturating_duration_since(Instant::now()))?;
            *end = Some(if exited {
                Termination::Killed
            } else {
                Termination::Survived
            });
        }
    }
    Ok(ended
        .into_iter()
        .map(|end| end.unwrap_or(Termination::Survived))
        .collect())
}

/// What a command run with [`run_captured`] did.
#[derive(Debug)]
pub(crate) struct CapturedRun {
    /// `None` when it ran past the timeout and was killed.
    pub status: Option<ExitStatus>,
    /// stdout and stderr interleaved as written, cut at the cap.
    pub output: String,
    /// True when output was cut at the cap.
    pub truncated: bool,
    pub elapsed: Duration,
}

/// The `$PATH` systemd gives a service (and so the heal unit) that sets none.
pub(crate) const SYSTEMD_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

/// Where `program` would be run from inside the heal unit: a name with a `/` is a path, any
/// other is looked up in systemd's default `$PATH` (not the caller's: `check` from a shell
/// must answer for the unit). Err says why it cannot run: missing, not a regular file, or not
/// executable.
pub(crate) fn find_executable(program: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        std::env::split_paths(SYSTEMD_DEFAULT_PATH)
            .map(|dir| dir.join(program))
            .collect()
    };
    let mut why = if program.contains('/') {
        "does not exist".to_owned()
    } else {
        format!("not found in systemd's default PATH ({SYSTEMD_DEFAULT_PATH})")
    };
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate);
            }
            Ok(meta) if meta.is_file() => {
                why = format!("{} is not executable", candidate.display());
            }
            Ok(_) => why = format!("{} is not a regular file", candidate.display()),
            Err(_) => {}
        }
    }
    Err(why)
}

/// Runs `argv` (never through a shell) with stdin closed, stdout and stderr captured into one
/// stream of at most `cap` bytes, and kills its whole process group after `timeout`.
pub(crate) fn run_captured(
    argv: &[String],
    timeout: Duration,
    cap: usize,
) -> io::Result<CapturedRun> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let started = Instant::now();
    let (mut reader, writer) = io::pipe()?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            // Its own process group, so a timeout also stops whatever it started.
            .process_group(0)
            .spawn()?
    };
    // The Command (and its copies of the pipe's write end) is gone: EOF comes when the child
    // and its descendants close theirs. The reader drains past the cap so none of them blocks.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut chunk = [0u8; 8192];
        while let Ok(read) = reader.read(&mut chunk) {
            if read == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..read.min(room)]);
            truncated |= read > room;
        }
        let _ = sender.send((kept, truncated));
    });
    let pidfd = Pidfd::open(child.id())?;
    let exited = pidfd.wait_exit(timeout)?;
    let group = libc::pid_t::try_from(child.id()).unwrap_or(0);
    if !exited {
        // SAFETY: killpg(2) on the child's own process group; it is our unreaped child, so the
        // group id cannot have been recycled.
        unsafe { libc::killpg(group, libc::SIGKILL) };
    }
    let status = child.wait()?;
    // A descendant that outlives the command may keep the pipe open; do not wait for it long.
    let (kept, truncated) = receiver
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    Ok(CapturedRun {
        status: exited.then_some(status),
        output: String::from_utf8_lossy(&kept).into_owned(),
        truncated,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn captures_both_streams_and_the_exit_status() {
        let run = run_captured(
            &argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        assert_eq!(run.status.and_then(|s| s.code()), Some(3));
        assert_eq!(run.output, "out\nerr\n");
        assert!(!run.truncated);
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let run = run_captured(
            &argv(&["/bin/sh", "-c", "echo started; sleep 30"]),
            Duration::from_millis(200),
            1024,
        )
        .unwrap();
        assert!(run.status.is_none());
        assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
        assert_eq!(run.output, "started\n");
    }

    #[test]
    fn output_is_capped() {
        let run = run_captured(
            &argv(&["/bin/sh", "-c", "yes | head -c 100000"]),
            Duration::from_secs(5),
            100,
        )
        .unwrap();
        assert_eq!(run.output.len(), 100);
        assert!(run.truncated);
    }

    #[test]
    fn no_shell_is_involved() {
        // The words reach the program as they are: `;` is not a command separator.
        let run = run_captured(
            &argv(&["/bin/echo", "a;", "touch", "/nonexistent-selfheal-probe"]),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        assert_eq!(run.output, "a; touch /nonexistent-selfheal-probe\n");
    }

    #[test]
    fn terminate_stops_a_process_that_ignores_sigterm() {
        let stubborn = || {
            let mut child = Command::new("/bin/sh")
                .args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            // Signal only once the trap is in place.
            let mut ready = [0u8; 6];
            child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
            child
        };
        let (mut first, mut second) = (stubborn(), stubborn());
        let mut polite = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let pidfds: Vec<Pidfd> = [&first, &second, &polite]
            .iter()
            .map(|child| Pidfd::open(child.id()).unwrap())
            .collect();
        let spared = second.id();

        let ended =
            terminate_all(&pidfds, Duration::from_millis(100), |p| p.pid() != spared).unwrap();

        assert_eq!(
            ended,
            [
                Termination::Killed,
                Termination::Spared,
                Termination::Terminated
            ]
        );
        assert!(first.wait().unwrap().code().is_none());
        polite.wait().unwrap();
        assert!(
            second.try_wait().unwrap().is_none(),
            "spared means not signalled"
        );
        second.kill().unwrap();
        second.wait().unwrap();
    }
}
