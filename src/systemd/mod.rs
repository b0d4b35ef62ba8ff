//! The systemd client: a narrow `UnitControl` interface, and its implementation over the D-Bus
//! system bus with zbus.
//!
//! zbus runs its own I/O thread, so each method here simply blocks on one async call; the rest
//! of selfheal stays synchronous. Every call has a timeout (the connection's method timeout, or
//! an explicit deadline when waiting for a signal).

mod batch;
#[cfg(test)]
pub(crate) mod fake;
mod properties;
mod proxy;
mod snapshot;
mod timer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use zbus::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use batch::get_property;
pub(crate) use batch::{UnitOverview, unit_object_path};
use properties::{SERVICE_PROPERTIES, UNIT_PROPERTIES, service_properties, unit_properties};
use proxy::{ManagerProxy, UnitProxy};
pub(crate) use snapshot::{ActiveState, FailedCommand, UnitSnapshot};

/// Method calls `call_many` keeps waiting for at once: well below dbus-daemon's default
/// `max_replies_per_connection` (128 on the system bus, which refuses the rest) and below the
/// 64 messages zbus queues for a stream before it drops the oldest.
const CALLS_IN_FLIGHT: usize = 32;

/// How long any single D-Bus method call may take.
const METHOD_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure to talk to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    // The zbus error is part of the message, not a `source`, so `{:#}` does not say it twice.
    #[error("cannot connect to the D-Bus system bus (is systemd running?): {0}")]
    Connect(Box<zbus::Error>),
    #[error("systemd call {call} failed: {cause}")]
    Call {
        call: &'static str,
        cause: Box<zbus::Error>,
    },
    #[error("unit {0} is not known to systemd (LoadState={1})")]
    UnitNotFound(String, String),
    #[error("timed out after {} waiting for systemd", crate::ui::duration::HumanDuration(*.0))]
    Timeout(Duration),
}

/// How a job that systemd ran ended (`JobRemoved`'s result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobResult(pub String);

impl JobResult {
    /// The job finished successfully.
    pub(crate) fn is_done(&self) -> bool {
        self.0 == "done"
    }
}

/// What a timer `start_later` sets starts when it elapses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fires<'a> {
    /// The existing service of the timer's name (`x.timer` starts `x.service`).
    ItsService,
    /// An existing unit of another name (the installed `selfheal-flush.service`, with its
    /// hardening and credentials).
    Unit(&'a str),
    /// A transient oneshot of the timer's name, running this argv.
    Command(&'a [String]),
}

/// What the watch asks of each service every round: how often systemd restarted it, in which
/// invocation, and under which `Restart=` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RestartFacts {
    pub invocation_id: String,
    pub n_restarts: u32,
    /// `Restart=`.
    pub restart: String,
    /// `RestartMode=` (systemd >= 254).
    pub restart_mode: Option<String>,
}

/// Which of a unit's processes a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillWhom {
    /// Its main process.
    Main,
    /// Every process of its cgroup.
    All,
}

/// What selfheal needs from the service manager. The D-Bus implementation is [`Systemd`];
/// tests of pure logic can substitute their own.
pub(crate) trait UnitControl {
    /// Reads the unit's current facts.
    fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError>;
    /// Clears a failed / start-limit-hit state.
    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError>;
    /// Restarts the unit and waits until its job is removed, at most `timeout`.
    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError>;
    /// Waits until the unit has no queued job, at most `timeout`.
    fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError>;
    /// The unit a process belongs to, as systemd sees it; `None` only when systemd says it
    /// belongs to no unit.
    fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError>;
    /// `systemctl daemon-reload`.
    fn reload(&self) -> Result<(), SystemdError>;
    /// The load and active states of `units`, in that order (the dashboard's list, without
    /// the per-unit questions). A scripted systemd without it knows no units.
    fn unit_states(&self, _units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        Ok(Vec::new())
    }
    /// Starts `unit` and waits until its job is removed, at most `timeout`.
    fn start(&self, unit: &str, _timeout: Duration) -> Result<JobResult, SystemdError> {
        Err(SystemdError::UnitNotFound(
            unit.to_owned(),
            "not-found".into(),
        ))
    }
    /// Starts what `fires` says once, `after` from now, through a transient timer that
    /// unloads when it has elapsed. A waiting timer of the same name is replaced.
    fn start_later(
        &self,
        timer: &str,
        _after: Duration,
        _fires: Fires<'_>,
    ) -> Result<(), SystemdError> {
        Err(SystemdError::UnitNotFound(
            timer.to_owned(),
            "not-found".into(),
        ))
    }
    /// `UnitFileState`: `enabled`, `disabled`, `static`, … (a scripted systemd: `enabled`).
    fn unit_file_state(&self, _unit: &str) -> Result<String, SystemdError> {
        Ok("enabled".to_owned())
    }
    /// Stops `unit` (gone already is fine); a scripted systemd has nothing to stop.
    fn stop_unit(&self, _unit: &str) -> Result<(), SystemdError> {
        Ok(())
    }
    /// Sends `signal` to `unit`'s main process, or to every process of its cgroup, as systemd
    /// knows them (never a PID looked up elsewhere); a scripted systemd has nothing to kill.
    fn kill(&self, _unit: &str, _whom: KillWhom, _signal: i32) -> Result<(), SystemdError> {
        Ok(())
    }
    /// The manager's version (252, 257, …).
    fn version(&self) -> Result<u32, SystemdError>;
    /// When each of `units` last became active (`ActiveEnterTimestampMonotonic`, µs of
    /// CLOCK_MONOTONIC; `None` when never or unknown), in one batch.
    fn active_since(&self, units: &[&str]) -> Result<Vec<Option<u64>>, SystemdError>;
    /// Queues a start of `unit` and returns without waiting for it.
    fn start_no_wait(&self, unit: &str) -> Result<(), SystemdError>;
    /// The watch's facts of each of `units`, in one batch (`None`: systemd could not
    /// describe it).
    fn restart_facts(&self, units: &[&str]) -> Result<Vec<Option<RestartFacts>>, SystemdError>;
    /// The states of `units` like `unit_states`, without making systemd load a unit only to
    /// answer: the loaded ones as listed, the others (stopped, or an alias) asked by name.
    fn loaded_states(&self, units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        self.unit_states(units)
    }
    /// What marks each of `units`' current invocation without asking systemd: the ID its
    /// `/run/systemd/units/invocation:<unit>` link names, `""` when there is none (not
    /// running); `None` when that cannot be read. A restart makes a new invocation, so a unit
    /// whose mark did not move was not restarted (a scripted systemd cannot tell: `None`).
    fn invocation_marks(&self, units: &[&str]) -> Vec<Option<String>> {
        units.iter().map(|_| None).collect()
    }
}

/// A borrowed implementation is one too (a test keeps its fake to look at afterwards).
impl<T: UnitControl + ?Sized> UnitControl for &T {
    fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError> {
        (**self).snapshot(unit)
    }
    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        (**self).reset_failed(unit)
    }
    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        (**self).restart(unit, timeout)
    }
    fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        (**self).wait_for_job(unit, timeout)
    }
    fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        (**self).unit_by_pid(pid)
    }
    fn reload(&self) -> Result<(), SystemdError> {
        (**self).reload()
    }
    fn unit_states(&self, units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        (**self).unit_states(units)
    }
    fn start(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        (**self).start(unit, timeout)
    }
    fn start_later(
        &self,
        timer: &str,
        after: Duration,
        fires: Fires<'_>,
    ) -> Result<(), SystemdError> {
        (**self).start_later(timer, after, fires)
    }
    fn unit_file_state(&self, unit: &str) -> Result<String, SystemdError> {
        (**self).unit_file_state(unit)
    }
    fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        (**self).stop_unit(unit)
    }
    fn kill(&self, unit: &str, whom: KillWhom, signal: i32) -> Result<(), SystemdError> {
        (**self).kill(unit, whom, signal)
    }
    fn version(&self) -> Result<u32, SystemdError> {
        (**self).version()
    }
    fn active_since(&self, units: &[&str]) -> Result<Vec<Option<u64>>, SystemdError> {
        (**self).active_since(units)
    }
    fn start_no_wait(&self, unit: &str) -> Result<(), SystemdError> {
        (**self).start_no_wait(unit)
    }
    fn restart_facts(&self, units: &[&str]) -> Result<Vec<Option<RestartFacts>>, SystemdError> {
        (**self).restart_facts(units)
    }
    fn invocation_marks(&self, units: &[&str]) -> Vec<Option<String>> {
        (**self).invocation_marks(units)
    }
    fn loaded_states(&self, units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        (**self).loaded_states(units)
    }
}

/// systemd over the D-Bus system bus.
pub(crate) struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
    /// systemd refuses a second `Subscribe` from the same connection.
    subscribed: AtomicBool,
}

fn call_error(call: &'static str) -> impl FnOnce(zbus::Error) -> SystemdError {
    move |cause| SystemdError::Call {
        call,
        cause: Box::new(cause),
    }
}

impl Systemd {
    /// Connects to the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or the standard socket).
    pub(crate) fn connect() -> Result<Systemd, SystemdError> {
        zbus::block_on(async {
            let connection = zbus::connection::Builder::system()
                .map_err(|e| SystemdError::Connect(Box::new(e)))?
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
                .map_err(|e| SystemdError::Connect(Box::new(e)))?;
            // No property cache: it would cost a GetAll of the whole Manager on every start.
            let manager = ManagerProxy::builder(&connection)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(|e| SystemdError::Connect(Box::new(e)))?;
            Ok(Systemd {
                connection,
                manager,
                subscribed: AtomicBool::new(false),
            })
        })
    }

    /// Asks systemd for job and unit signals (once per connection).
    async fn subscribe(&self) -> Result<(), SystemdError> {
        if self.subscribed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match self.manager.subscribe().await {
            // Already subscribed is exactly the state we asked for.
            Err(zbus::Error::MethodError(name, ..))
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" =>
            {
                Ok(())
            }
            other => other.map_err(call_error("Subscribe")),
        }
    }

    /// Subscribes and opens the JobRemoved stream. Open it right before asking for a job, so
    /// the removal of a fast job cannot slip past. (Not earlier: an unread stream fills up
    /// with every job on the host, and a full one stalls the whole connection.)
    async fn job_removals(&self) -> Result<proxy::JobRemovedStream, SystemdError> {
        self.subscribe().await?;
        self.manager
            .receive_job_removed()
            .await
            .map_err(call_error("JobRemoved match"))
    }

    async fn unit_proxy(&self, path: &OwnedObjectPath) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(&self.connection)
            .path(path.clone())
            .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
            .map_err(call_error("Unit proxy"))?
            .build()
            .await
            .map_err(call_error("Unit proxy"))
    }

    /// Every property with one `Get`, all sent before any reply is awaited: one round trip,
    /// and systemd computes only what is asked. (A `GetAll` of the Unit interface also makes
    /// it look up the unit file and the presets for UnitFileState and UnitFilePreset, ~1 ms of
    /// its time before every restart; one of the Service interface serializes some 200
    /// properties.)
    async fn read_snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError> {
        let unit_gets = UNIT_PROPERTIES.map(|name| ("org.freedesktop.systemd1.Unit", name));
        let service_gets =
            SERVICE_PROPERTIES.map(|name| ("org.freedesktop.systemd1.Service", name));
        let calls = unit_gets
            .into_iter()
            .chain(service_gets)
            .map(|property| get_property(unit, property))
            .collect::<zbus::Result<Vec<_>>>()
            .map_err(call_error("Get"))?;
        let mut values = self
            .call_many(calls, CALLS_IN_FLIGHT)
            .await
            .into_iter()
            .map(|reply| reply.and_then(|reply| reply.body().deserialize::<OwnedValue>()));
        let mut next = || {
            values
                .next()
                .unwrap_or_else(|| Err(zbus::Error::Failure("missing reply".into())))
        };
        let props = unit_properties(&mut next).map_err(call_error("Get Unit property"))?;
        let load_state = props.load_state.clone().unwrap_or_default();
        if load_state == "not-found" || load_state.is_empty() {
            return Err(SystemdError::UnitNotFound(unit.to_owned(), load_state));
        }
        let service = service_properties(&mut next).map_err(call_error("Get Service property"))?;
        Ok(properties::snapshot_of(unit, props, load_state, service))
    }
}

impl Systemd {
    /// Stops `unit` and waits for the job; a unit systemd does not know is already stopped.
    pub(crate) fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        match self.run_job("StopUnit", METHOD_TIMEOUT, || {
            self.manager.stop_unit(unit, "replace")
        }) {
            Ok(_) => Ok(()),
            Err(SystemdError::Call { cause, .. }) if is_no_such_unit(&cause) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The names of the loaded units that match any of `patterns` (shell globs).
    pub(crate) fn units_matching(&self, patterns: &[&str]) -> Result<Vec<String>, SystemdError> {
        zbus::block_on(self.manager.list_units_by_patterns(&[], patterns))
            .map(|rows| rows.into_iter().map(|row| row.0).collect())
            .map_err(call_error("ListUnitsByPatterns"))
    }

    /// The loaded service units and their ActiveState, in one call.
    pub(crate) fn loaded_services(&self) -> Result<Vec<(String, String)>, SystemdError> {
        let rows = zbus::block_on(self.manager.list_units_by_patterns(&[], &["*.service"]))
            .map_err(call_error("ListUnitsByPatterns"))?;
        Ok(rows
            .into_iter()
            .filter(|row| row.2 == "loaded")
            .map(|row| (row.0, row.3))
            .collect())
    }

    /// Every service unit systemd knows, sorted: the loaded ones (transient and template
    /// instances included) and the unit files (without templates, aliases and masked ones).
    pub(crate) fn service_units(&self) -> Result<Vec<String>, SystemdError> {
        let loaded = zbus::block_on(self.manager.list_units_by_patterns(&[], &["*.service"]))
            .map_err(call_error("ListUnitsByPatterns"))?;
        let files = zbus::block_on(
            self.manager
                .list_unit_files_by_patterns(&[], &["*.service"]),
        )
        .map_err(call_error("ListUnitFilesByPatterns"))?;
        let mut units: Vec<String> = loaded
            .into_iter()
            .filter(|row| row.2 != "not-found" && row.2 != "masked")
            .map(|row| row.0)
            .chain(files.into_iter().filter_map(|(path, state)| {
                let name = path.rsplit('/').next()?.to_owned();
                let skip = name.ends_with("@.service")
                    || matches!(
                        state.as_str(),
                        "alias" | "masked" | "masked-runtime" | "bad"
                    );
                (!skip).then_some(name)
            }))
            .collect();
        units.sort();
        units.dedup();
        Ok(units)
    }

    /// Queues a job with `queue` (StartUnit, RestartUnit, …) and waits until systemd removes
    /// it, at most `timeout`. The JobRemoved stream is opened first, so the removal of a fast
    /// job cannot slip past.
    fn run_job<F>(
        &self,
        call: &'static str,
        timeout: Duration,
        queue: impl FnOnce() -> F,
    ) -> Result<JobResult, SystemdError>
    where
        F: Future<Output = zbus::Result<OwnedObjectPath>>,
    {
        zbus::block_on(async {
            let mut removed = self.job_removals().await?;
            let job = queue().await.map_err(call_error(call))?;
            let wait = async {
                next_removal(&mut removed, |args| args.job == job)
                    .await
                    .map(JobResult)
                    .ok_or_else(|| SystemdError::Call {
                        call: "JobRemoved",
                        cause: Box::new(zbus::Error::Failure("signal stream ended".into())),
                    })
            };
            with_timeout(timeout, wait).await
        })
    }
}

impl UnitControl for Systemd {
    /// systemd's version number (`252` of `252.39-1~deb12u1`).
    fn version(&self) -> Result<u32, SystemdError> {
        let version: String =
            zbus::block_on(self.manager.version()).map_err(call_error("Get Version"))?;
        Ok(version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0))
    }

    fn active_since(&self, units: &[&str]) -> Result<Vec<Option<u64>>, SystemdError> {
        self.active_since_within(units, METHOD_TIMEOUT)
    }

    /// A heal unit's run takes seconds; the probe round that starts it goes on.
    fn start_no_wait(&self, unit: &str) -> Result<(), SystemdError> {
        zbus::block_on(with_timeout(METHOD_TIMEOUT, async {
            self.manager
                .start_unit(unit, "replace")
                .await
                .map_err(call_error("StartUnit"))
        }))
        .map(|_job| ())
    }

    fn restart_facts(&self, units: &[&str]) -> Result<Vec<Option<RestartFacts>>, SystemdError> {
        self.restart_facts_of(units, METHOD_TIMEOUT)
    }
    fn loaded_states(&self, units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        let loaded = zbus::block_on(self.manager.list_units_by_patterns(&[], &[]))
            .map_err(call_error("ListUnitsByPatterns"))?;
        let by_id: std::collections::HashMap<&str, &proxy::UnitRow> =
            loaded.iter().map(|row| (row.0.as_str(), row)).collect();
        let missing: Vec<&str> = units
            .iter()
            .filter(|unit| !by_id.contains_key(**unit))
            .copied()
            .collect();
        let mut asked = if missing.is_empty() {
            Vec::new()
        } else {
            self.unit_states(&missing)?
        }
        .into_iter();
        Ok(units
            .iter()
            .map(|unit| match by_id.get(unit) {
                Some(row) => UnitOverview::of_row(row),
                None => asked.next().unwrap_or_default(),
            })
            .collect())
    }
    fn invocation_marks(&self, units: &[&str]) -> Vec<Option<String>> {
        // systemd keeps the link for journald; reading 300 links costs ~1 ms, asking systemd
        // for 300 units' restart counts ~100 ms.
        let dir = std::path::Path::new("/run/systemd/units");
        if !dir.is_dir() {
            return units.iter().map(|_| None).collect();
        }
        units
            .iter()
            .map(
                |unit| match std::fs::read_link(dir.join(format!("invocation:{unit}"))) {
                    Ok(target) => Some(target.to_string_lossy().into_owned()),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(String::new()),
                    Err(_) => None,
                },
            )
            .collect()
    }

    fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError> {
        zbus::block_on(self.read_snapshot(unit))
    }

    fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.stop(unit)
    }

    fn unit_file_state(&self, unit: &str) -> Result<String, SystemdError> {
        self.get_many(
            &[(unit, "org.freedesktop.systemd1.Unit", "UnitFileState")],
            METHOD_TIMEOUT,
        )?
        .pop()
        .flatten()
        .and_then(|value| String::try_from(value).ok())
        .ok_or(SystemdError::Call {
            call: "Get UnitFileState",
            cause: Box::new(zbus::Error::Failure("no answer".into())),
        })
    }

    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        zbus::block_on(self.manager.reset_failed_unit(unit)).map_err(call_error("ResetFailedUnit"))
    }

    fn kill(&self, unit: &str, whom: KillWhom, signal: i32) -> Result<(), SystemdError> {
        let whom = match whom {
            KillWhom::Main => "main",
            KillWhom::All => "all",
        };
        zbus::block_on(self.manager.kill_unit(unit, whom, signal)).map_err(call_error("KillUnit"))
    }

    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        self.run_job("RestartUnit", timeout, || {
            self.manager.restart_unit(unit, "replace")
        })
    }

    fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        zbus::block_on(async {
            let mut removed = self.job_removals().await?;
            let path = OwnedObjectPath::try_from(unit_object_path(unit))
                .map_err(|e| call_error("unit path")(e.into()))?;
            let unit_proxy = self.unit_proxy(&path).await?;
            let (job_id, _) = unit_proxy.job().await.map_err(call_error("Get Job"))?;
            if job_id == 0 {
                return Ok(());
            }
            // A stream that ends means the bus went away; the caller's next look will say so.
            let wait = async {
                next_removal(&mut removed, |args| args.id == job_id).await;
                Ok(())
            };
            with_timeout(timeout, wait).await
        })
    }

    fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        zbus::block_on(async {
            let path = match self.manager.get_unit_by_pid(pid).await {
                Ok(path) => path,
                // Only this answer means "in no unit" (or already gone). Any other error says
                // nothing about the process: the caller must treat its owner as unknown.
                Err(zbus::Error::MethodError(name, ..))
                    if name.as_str() == "org.freedesktop.systemd1.NoUnitForPID" =>
                {
                    return Ok(None);
                }
                Err(source) => return Err(call_error("GetUnitByPID")(source)),
            };
            let unit = self.unit_proxy(&path).await?;
            Ok(Some(unit.id().await.map_err(call_error("Get Id"))?))
        })
    }

    fn reload(&self) -> Result<(), SystemdError> {
        zbus::block_on(self.manager.reload()).map_err(call_error("Reload"))
    }

    fn unit_states(&self, units: &[&str]) -> Result<Vec<UnitOverview>, SystemdError> {
        self.overview(&[], units, METHOD_TIMEOUT)
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        self.run_job("StartUnit", timeout, || {
            self.manager.start_unit(unit, "replace")
        })
    }

    fn start_later(
        &self,
        timer: &str,
        after: Duration,
        fires: Fires<'_>,
    ) -> Result<(), SystemdError> {
        self.start_timer(timer, after, fires)
    }
}

/// systemd's answer for a unit it has not loaded.
fn is_no_such_unit(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, ..) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

/// The result of the first JobRemoved signal that `matches`, or `None` when the stream ends.
async fn next_removal(
    removed: &mut proxy::JobRemovedStream,
    matches: impl Fn(&proxy::JobRemovedArgs<'_>) -> bool,
) -> Option<String> {
    while let Some(signal) = removed.next().await {
        if let Ok(args) = signal.args()
            && matches(&args)
        {
            return Some(args.result);
        }
    }
    None
}

async fn with_timeout<T>(
    timeout: Duration,
    future: impl Future<Output = Result<T, SystemdError>>,
) -> Result<T, SystemdError> {
    futures_lite::future::or(future, async {
        async_io::Timer::after(timeout).await;
        Err(SystemdError::Timeout(timeout))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::batch::unit_object_path;

    #[test]
    fn encodes_unit_paths_like_systemd() {
        assert_eq!(
            unit_object_path("web.service"),
            "/org/freedesktop/systemd1/unit/web_2eservice"
        );
        assert_eq!(
            unit_object_path("story-stages.service"),
            "/org/freedesktop/systemd1/unit/story_2dstages_2eservice"
        );
        assert_eq!(
            unit_object_path("getty@tty1.service"),
            "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
        );
    }
}
