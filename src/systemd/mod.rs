//! The systemd client: a narrow `UnitControl` interface, and its implementation over the D-Bus
//! system bus with zbus.
//!
//! zbus runs its own I/O thread, so each method here simply blocks on one async call; the rest
//! of selfheal stays synchronous. Every call has a timeout (the connection's method timeout, or
//! an explicit deadline when waiting for a signal).

#[cfg(test)]
pub(crate) mod fake;
mod proxy;
mod snapshot;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use zbus::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

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
        let load_state = props.load_state.unwrap_or_default();
        if load_state == "not-found" || load_state.is_empty() {
            return Err(SystemdError::UnitNotFound(unit.to_owned(), load_state));
        }
        let service = service_properties(&mut next).map_err(call_error("Get Service property"))?;
        let job_id = props.job.map_or(0, |(id, _)| id);
        let memory = service.memory_current.unwrap_or(u64::MAX);
        let exec_start = service.exec_start.clone().unwrap_or_default();
        // systemd says "no limit" with u64::MAX.
        let limit = |bytes: u64| (bytes != u64::MAX).then_some(bytes);
        let writes = write_paths(&service);
        Ok(UnitSnapshot {
            unit: props.id.unwrap_or_else(|| unit.to_owned()),
            load_state,
            active_state: ActiveState::parse(&props.active_state.unwrap_or_default()),
            sub_state: props.sub_state.unwrap_or_default(),
            result: service.result.unwrap_or_default(),
            exec_main_code: service.exec_main_code.unwrap_or(0),
            exec_main_status: service.exec_main_status.unwrap_or(0),
            n_restarts: service.n_restarts.unwrap_or(0),
            main_pid: service.main_pid.unwrap_or(0),
            invocation_id: crate::host::hex(&props.invocation_id.unwrap_or_default()),
            // systemd reports "unknown" as u64::MAX.
            memory_current: (memory != u64::MAX).then_some(memory),
            active_enter_timestamp_us: props.active_enter_timestamp.unwrap_or(0),
            job_id: (job_id != 0).then_some(job_id),
            control_group: service.control_group.unwrap_or_default(),
            failed_command: failed_command(
                &service.exec_start_pre,
                &exec_start,
                &service.service_type,
            ),
            exec_start: exec_start.into_iter().map(|(_, argv, ..)| argv).collect(),
            service_type: service.service_type.clone(),
            memory_max: limit(service.memory_max),
            memory_high: limit(service.memory_high),
            write_paths: writes,
            main_started_monotonic_us: service.main_started_monotonic_us,
            environment_files: service.environment_files.unwrap_or_default(),
            // What it cannot run without, and what it waits for and pulls in.
            requires: props
                .requires
                .iter()
                .chain(&props.binds_to)
                .cloned()
                .collect(),
            ordered_wants: props
                .wants
                .iter()
                .filter(|unit| props.after.contains(unit))
                .cloned()
                .collect(),
        })
    }
}

/// The Unit interface properties selfheal reads, in the order `unit_properties` takes them.
const UNIT_PROPERTIES: [&str; 11] = [
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "InvocationID",
    "Job",
    "ActiveEnterTimestamp",
    "Requires",
    "BindsTo",
    "Wants",
    "After",
];

/// The Unit interface properties selfheal reads.
#[derive(Debug, Default)]
struct UnitProperties {
    id: Option<String>,
    load_state: Option<String>,
    active_state: Option<String>,
    sub_state: Option<String>,
    invocation_id: Option<Vec<u8>>,
    job: Option<(u32, OwnedObjectPath)>,
    active_enter_timestamp: Option<u64>,
    requires: Vec<String>,
    binds_to: Vec<String>,
    wants: Vec<String>,
    after: Vec<String>,
}

/// A property's value, or the first error of its `Get`.
type Next<'a> = dyn FnMut() -> zbus::Result<OwnedValue> + 'a;

/// `UNIT_PROPERTIES` from the replies, in that order.
fn unit_properties(next: &mut Next<'_>) -> zbus::Result<UnitProperties> {
    Ok(UnitProperties {
        id: Some(String::try_from(next()?)?),
        load_state: Some(String::try_from(next()?)?),
        active_state: Some(String::try_from(next()?)?),
        sub_state: Some(String::try_from(next()?)?),
        invocation_id: Some(<Vec<u8>>::try_from(next()?)?),
        job: Some(<(u32, OwnedObjectPath)>::try_from(next()?)?),
        active_enter_timestamp: Some(u64::try_from(next()?)?),
        requires: <Vec<String>>::try_from(next()?)?,
        binds_to: <Vec<String>>::try_from(next()?)?,
        wants: <Vec<String>>::try_from(next()?)?,
        after: <Vec<String>>::try_from(next()?)?,
    })
}

/// `ExecStart=` entries: path, argv, ignore-failure, then timestamps, pid and status.
type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

/// The Service interface properties selfheal reads, in the order `service_properties` takes
/// them.
const SERVICE_PROPERTIES: [&str; 18] = [
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "MainPID",
    "NRestarts",
    "MemoryCurrent",
    "ControlGroup",
    "EnvironmentFiles",
    "ExecStart",
    "ExecStartPre",
    "Type",
    "MemoryMax",
    "MemoryHigh",
    "WorkingDirectory",
    "StateDirectory",
    "ReadWritePaths",
    "LogsDirectory",
    "ExecMainStartTimestampMonotonic",
];

/// The Service interface properties selfheal reads.
#[derive(Debug, Default)]
struct ServiceProperties {
    result: Option<String>,
    exec_main_code: Option<i32>,
    exec_main_status: Option<i32>,
    main_pid: Option<u32>,
    n_restarts: Option<u32>,
    memory_current: Option<u64>,
    control_group: Option<String>,
    environment_files: Option<Vec<(String, bool)>>,
    exec_start: Option<Vec<ExecCommand>>,
    exec_start_pre: Vec<ExecCommand>,
    service_type: String,
    memory_max: u64,
    memory_high: u64,
    working_directory: String,
    state_directory: Vec<String>,
    read_write_paths: Vec<String>,
    logs_directory: Vec<String>,
    main_started_monotonic_us: u64,
}

/// `SERVICE_PROPERTIES` from the replies, in that order.
fn service_properties(next: &mut Next<'_>) -> zbus::Result<ServiceProperties> {
    Ok(ServiceProperties {
        result: Some(String::try_from(next()?)?),
        exec_main_code: Some(i32::try_from(next()?)?),
        exec_main_status: Some(i32::try_from(next()?)?),
        main_pid: Some(u32::try_from(next()?)?),
        n_restarts: Some(u32::try_from(next()?)?),
        memory_current: Some(u64::try_from(next()?)?),
        control_group: Some(String::try_from(next()?)?),
        environment_files: Some(<Vec<(String, bool)>>::try_from(next()?)?),
        exec_start: Some(<Vec<ExecCommand>>::try_from(next()?)?),
        exec_start_pre: <Vec<ExecCommand>>::try_from(next()?)?,
        service_type: String::try_from(next()?)?,
        memory_max: u64::try_from(next()?)?,
        memory_high: u64::try_from(next()?)?,
        working_directory: String::try_from(next()?)?,
        state_directory: <Vec<String>>::try_from(next()?)?,
        read_write_paths: <Vec<String>>::try_from(next()?)?,
        logs_directory: <Vec<String>>::try_from(next()?)?,
        main_started_monotonic_us: u64::try_from(next()?)?,
    })
}

/// The first start command that failed: `ExecStartPre=` ones, in order, then the `ExecStart=`
/// of a `Type=forking` unit (elsewhere that process is the main process, which the exit status
/// already describes). A failure the unit tolerates (`-` prefixed) is not one.
fn failed_command(
    pre: &[ExecCommand],
    start: &[ExecCommand],
    service_type: &str,
) -> Option<FailedCommand> {
    let start = if service_type == "forking" {
        start
    } else {
        &[]
    };
    let stages = pre
        .iter()
        .map(|command| ("ExecStartPre", command))
        .chain(start.iter().map(|command| ("ExecStart", command)));
    for (stage, (path, argv, ignore, _, _, _, _, pid, code, status)) in stages {
        // CLD_EXITED = 1 with a status other than 0, CLD_KILLED = 2, CLD_DUMPED = 3.
        let failed = (*code == 1 && *status != 0) || *code == 2 || *code == 3;
        if failed && !ignore {
            return Some(FailedCommand {
                stage,
                path: path.clone(),
                argv: argv.clone(),
                pid: *pid,
                code: *code,
                status: *status,
            });
        }
    }
    None
}

/// The directories a service writes to, as its unit declares them: `WorkingDirectory=` (without
/// its `-`/`!` prefixes; `~` is the user's home, left out), `StateDirectory=` and
/// `LogsDirectory=` (below /var/lib and /var/log), `ReadWritePaths=`.
fn write_paths(service: &ServiceProperties) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    let working = service
        .working_directory
        .trim_start_matches(['-', '!', '+']);
    if working.starts_with('/') {
        paths.push(working.into());
    }
    for dir in &service.state_directory {
        paths.push(std::path::Path::new("/var/lib").join(dir));
    }
    for dir in &service.logs_directory {
        paths.push(std::path::Path::new("/var/log").join(dir));
    }
    for path in &service.read_write_paths {
        let path = path.trim_start_matches(['-', '+']);
        if path.starts_with('/') {
            paths.push(path.into());
        }
    }
    paths
}

/// A `Get` of `(interface, property)` on `unit`'s object, for `call_many`.
fn get_property(unit: &str, (interface, property): (&str, &str)) -> zbus::Result<zbus::Message> {
    zbus::Message::method_call(unit_object_path(unit), "Get")?
        .destination("org.freedesktop.systemd1")?
        .interface("org.freedesktop.DBus.Properties")?
        .build(&(interface, property))
}

/// systemd's object path for a unit (sd_bus_path_encode): every byte that is not an ASCII
/// letter or digit becomes `_xx`. Asking for properties on it loads the unit if needed.
pub(crate) fn unit_object_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        path.push('_');
    }
    for byte in unit.bytes() {
        if byte.is_ascii_alphanumeric() {
            path.push(char::from(byte));
        } else {
            let _ = write!(path, "_{byte:02x}");
        }
    }
    path
}

/// One unit as the dashboard sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitOverview {
    /// The unit's own name (an alias that was asked for resolves to it).
    pub id: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: String,
    /// The units its `OnFailure=` starts.
    pub on_failure: Vec<String>,
}

impl Systemd {
    /// Every unit in `units`, then every one in `listed_only`, in that order: one
    /// `ListUnitsByNames` for all and, alongside it, the `OnFailure=` of those in `units`; at
    /// most `timeout` in all. A unit systemd does not know has `load_state` `not-found`.
    pub(crate) fn overview(
        &self,
        units: &[&str],
        listed_only: &[&str],
        timeout: Duration,
    ) -> Result<Vec<UnitOverview>, SystemdError> {
        let calls = units
            .iter()
            .map(|unit| get_property(unit, ("org.freedesktop.systemd1.Unit", "OnFailure")))
            .collect::<zbus::Result<Vec<_>>>()
            .map_err(call_error("Get OnFailure"))?;
        let all: Vec<&str> = units.iter().chain(listed_only).copied().collect();
        let (listed, replies) = zbus::block_on(with_timeout(timeout, async {
            Ok(futures_lite::future::zip(
                self.manager.list_units_by_names(&all),
                self.call_many(calls, CALLS_IN_FLIGHT),
            )
            .await)
        }))?;
        let values: Vec<zbus::Result<OwnedValue>> = replies
            .into_iter()
            .map(|reply| reply.and_then(|reply| reply.body().deserialize::<OwnedValue>()))
            .collect();
        let listed = listed.map_err(call_error("ListUnitsByNames"))?;
        let mut values = values.into_iter();
        let mut overviews = Vec::with_capacity(all.len());
        for (index, unit) in all.iter().enumerate() {
            let on_failure = if index < units.len() {
                values.next().and_then(Result::ok)
            } else {
                None
            };
            // systemd answers in the order asked, with each unit's real name: an alias
            // (`sshd.service` for ssh.service) comes back under the name it stands for.
            let row = if listed.len() == all.len() {
                listed.get(index)
            } else {
                listed.iter().find(|row| row.0 == *unit)
            };
            overviews.push(UnitOverview {
                id: row.map_or_else(|| (*unit).to_owned(), |row| row.0.clone()),
                load_state: row.map_or_else(|| "not-found".to_owned(), |row| row.2.clone()),
                active_state: ActiveState::parse(row.map_or("inactive", |row| row.3.as_str())),
                sub_state: row.map_or_else(|| "dead".to_owned(), |row| row.4.clone()),
                on_failure: on_failure
                    .and_then(|value| <Vec<String>>::try_from(value).ok())
                    .unwrap_or_default(),
            });
        }
        Ok(overviews)
    }
}

impl Systemd {
    /// Sends `calls`, at most `limit` awaiting their replies at once, and returns the replies
    /// in the same order. One stream of incoming messages serves all of them (a zbus
    /// `call_method` per call would wake every pending call for every reply), and the limit
    /// keeps below what dbus-daemon accepts per connection. At 300 calls the time is systemd's
    /// and dbus-daemon's (~0.3 ms per `Get` here), not ours.
    async fn call_many(
        &self,
        calls: Vec<zbus::Message>,
        limit: usize,
    ) -> Vec<zbus::Result<zbus::Message>> {
        // Subscribed before the first call is sent, so no reply can slip past.
        let mut incoming = zbus::MessageStream::from(&self.connection);
        let total = calls.len();
        let mut replies: Vec<Option<zbus::Result<zbus::Message>>> =
            (0..total).map(|_| None).collect();
        let mut pending = std::collections::HashMap::new();
        let mut queue = calls.into_iter().enumerate();
        let mut answered = 0;
        loop {
            while pending.len() < limit {
                let Some((index, call)) = queue.next() else {
                    break;
                };
                let serial = call.primary_header().serial_num();
                match self.connection.send(&call).await {
                    Ok(()) => {
                        pending.insert(serial, index);
                    }
                    Err(err) => {
                        replies[index] = Some(Err(err));
                        answered += 1;
                    }
                }
            }
            if answered == total {
                break;
            }
            let Some(message) = incoming.next().await else {
                break;
            };
            let Ok(message) = message else { continue };
            let reply_to = message.header().reply_serial();
            if let Some(index) = reply_to.and_then(|serial| pending.remove(&serial)) {
                replies[index] = Some(match message.message_type() {
                    zbus::message::Type::Error => Err(zbus::Error::from(message)),
                    _ => Ok(message),
                });
                answered += 1;
            }
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err(zbus::Error::Failure("no reply".into()))))
            .collect()
    }
}

impl Systemd {
    /// When each of `units` last became active (`ActiveEnterTimestampMonotonic`, µs of
    /// CLOCK_MONOTONIC; `None` when never or unknown), in one batch of `Get`s, at most
    /// `timeout` in all.
    pub(crate) fn active_since(
        &self,
        units: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Option<u64>>, SystemdError> {
        let gets: Vec<(&str, &str, &str)> = units
            .iter()
            .map(|unit| {
                (
                    *unit,
                    "org.freedesktop.systemd1.Unit",
                    "ActiveEnterTimestampMonotonic",
                )
            })
            .collect();
        Ok(self
            .get_many(&gets, timeout)?
            .into_iter()
            .map(|value| {
                value
                    .and_then(|value| u64::try_from(value).ok())
                    .filter(|since| *since > 0)
            })
            .collect())
    }

    /// `Get`s of (unit, interface, property), sent as one batch and answered in order; `None`
    /// for one that could not be read. At most `timeout` in all.
    fn get_many(
        &self,
        gets: &[(&str, &str, &str)],
        timeout: Duration,
    ) -> Result<Vec<Option<OwnedValue>>, SystemdError> {
        let calls = gets
            .iter()
            .map(|(unit, interface, property)| get_property(unit, (interface, property)))
            .collect::<zbus::Result<Vec<_>>>()
            .map_err(call_error("Get"))?;
        let replies = zbus::block_on(with_timeout(timeout, async {
            Ok(self.call_many(calls, CALLS_IN_FLIGHT).await)
        }))?;
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .and_then(|reply| reply.body().deserialize::<OwnedValue>())
                    .ok()
            })
            .collect())
    }

    /// Queues a start of `unit` and returns without waiting for it (a heal unit's run takes
    /// seconds; the probe round that starts it goes on).
    pub(crate) fn start_no_wait(&self, unit: &str) -> Result<(), SystemdError> {
        zbus::block_on(with_timeout(METHOD_TIMEOUT, async {
            self.manager
                .start_unit(unit, "replace")
                .await
                .map_err(call_error("StartUnit"))
        }))
        .map(|_job| ())
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

    /// String properties of the `org.freedesktop.systemd1.Service` interface of `unit`, in
    /// order; `None` for one this systemd does not have (`RestartMode` before 254).
    pub(crate) fn service_strings(
        &self,
        unit: &str,
        properties: &[&str],
    ) -> Result<Vec<Option<String>>, SystemdError> {
        let gets: Vec<(&str, &str, &str)> = properties
            .iter()
            .map(|property| (unit, "org.freedesktop.systemd1.Service", *property))
            .collect();
        Ok(self
            .get_many(&gets, METHOD_TIMEOUT)?
            .into_iter()
            .map(|value| value.and_then(|value| String::try_from(value).ok()))
            .collect())
    }

    /// systemd's version number (`252` of `252.39-1~deb12u1`).
    pub(crate) fn version(&self) -> Result<u32, SystemdError> {
        let version: String =
            zbus::block_on(self.manager.version()).map_err(call_error("Get Version"))?;
        Ok(version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0))
    }

    /// The names of the loaded units that match any of `patterns` (shell globs).
    pub(crate) fn units_matching(&self, patterns: &[&str]) -> Result<Vec<String>, SystemdError> {
        zbus::block_on(self.manager.list_units_by_patterns(&[], patterns))
            .map(|rows| rows.into_iter().map(|row| row.0).collect())
            .map_err(call_error("ListUnitsByPatterns"))
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
        // A timer still waiting from an earlier schedule is replaced: stopping it (and waiting
        // for the stop) unloads it, so its name is free again.
        self.stop(timer)?;
        let after_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
        let service = service_of(timer);
        let properties = [
            (
                "Description",
                Value::from(format!("selfheal: start {service} later")),
            ),
            ("OnActiveSec", Value::from(after_us)),
            // The default accuracy is a minute: a retry due in 5 s must not wait for one.
            ("AccuracyUSec", Value::from(1_000_000_u64)),
            ("RemainAfterElapse", Value::from(false)),
        ];
        // A timer starts the service of its own name (systemd 252 cannot set a transient
        // timer's Unit=). For another unit, that service is a oneshot that pulls it in with
        // Wants=, so the unit runs as installed, with its own hardening and credentials.
        let (command, wants): (Vec<String>, Vec<String>) = match fires {
            Fires::ItsService => (Vec::new(), Vec::new()),
            Fires::Command(argv) => (argv.to_vec(), Vec::new()),
            Fires::Unit(unit) => (vec![TRUE.to_owned()], vec![unit.to_owned()]),
        };
        let description = match fires {
            Fires::Unit(unit) => format!("selfheal: start {unit}"),
            _ => format!("selfheal: {}", command.join(" ")),
        };
        let exec: Vec<(String, Vec<String>, bool)> = command
            .first()
            .map(|program| vec![(program.clone(), command.clone(), false)])
            .unwrap_or_default();
        let mut service_properties = vec![
            ("Description", Value::from(description)),
            ("Type", Value::from("oneshot")),
            ("ExecStart", Value::from(exec)),
            // Gone once it ran, also when it failed: no failed unit is left behind.
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        if !wants.is_empty() {
            service_properties.push(("Wants", Value::from(wants)));
        }
        let aux: Vec<(&str, &[(&str, Value<'_>)])> = if fires == Fires::ItsService {
            Vec::new()
        } else {
            vec![(service.as_str(), &service_properties[..])]
        };
        // Waited for: once this returns the timer is active, so the run that says "timed retry
        // at …" (and `status`, and `uninstall`'s stop) finds it.
        self.run_job("StartTransientUnit", METHOD_TIMEOUT, || {
            self.manager
                .start_transient_unit(timer, "replace", &properties, &aux)
        })
        .map(drop)
    }
}

/// A program that does nothing, for a transient service that only pulls in another unit.
const TRUE: &str = "/usr/bin/true";

/// `x.timer` → `x.service`.
fn service_of(timer: &str) -> String {
    format!("{}.service", timer.strip_suffix(".timer").unwrap_or(timer))
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
    use super::unit_object_path;

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
