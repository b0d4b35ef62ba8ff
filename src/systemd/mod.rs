//! The systemd client: a narrow `UnitControl` interface, and its implementation over the D-Bus
//! system bus with zbus.
//!
//! zbus runs its own I/O thread, so each method here simply blocks on one async call; the rest
//! of selfheal stays synchronous. Every call has a timeout (the connection's method timeout, or
//! an explicit deadline when waiting for a signal).

mod proxy;
mod snapshot;

use std::time::Duration;

use futures_lite::StreamExt;
use zbus::Connection;
use zbus::zvariant::OwnedObjectPath;

use proxy::{ManagerProxy, ServiceProxy, UnitProxy};
pub use snapshot::UnitSnapshot;

/// How long any single D-Bus method call may take.
const METHOD_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure to talk to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the D-Bus system bus (is systemd running?): {0}")]
    Connect(#[source] Box<zbus::Error>),
    #[error("systemd call {call} failed: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("unit {0} is not known to systemd (LoadState={1})")]
    UnitNotFound(String, String),
    #[error("timed out after {0:?} waiting for systemd")]
    Timeout(Duration),
}

/// How a job that systemd ran ended (`JobRemoved`'s result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult(pub String);

impl JobResult {
    /// The job finished successfully.
    pub fn is_done(&self) -> bool {
        self.0 == "done"
    }
}

/// What selfheal needs from the service manager. The D-Bus implementation is [`Systemd`];
/// tests of pure logic can substitute their own.
pub trait UnitControl {
    /// Reads the unit's current facts.
    fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError>;
    /// Clears a failed / start-limit-hit state.
    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError>;
    /// Restarts the unit and waits until its job is removed, at most `timeout`.
    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError>;
    /// Waits until the unit has no queued job, at most `timeout`.
    fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError>;
    /// The unit a process belongs to, as systemd sees it.
    fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError>;
    /// `systemctl daemon-reload`.
    fn reload(&self) -> Result<(), SystemdError>;
}

/// systemd over the D-Bus system bus.
pub struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

fn call_error(call: &'static str) -> impl FnOnce(zbus::Error) -> SystemdError {
    move |source| SystemdError::Call {
        call,
        source: Box::new(source),
    }
}

impl Systemd {
    /// Connects to the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or the standard socket).
    pub fn connect() -> Result<Systemd, SystemdError> {
        zbus::block_on(async {
            let connection = zbus::connection::Builder::system()
                .map_err(|e| SystemdError::Connect(Box::new(e)))?
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
                .map_err(|e| SystemdError::Connect(Box::new(e)))?;
            let manager = ManagerProxy::new(&connection)
                .await
                .map_err(|e| SystemdError::Connect(Box::new(e)))?;
            Ok(Systemd {
                connection,
                manager,
            })
        })
    }

    async fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.manager
            .load_unit(unit)
            .await
            .map_err(call_error("LoadUnit"))
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

    async fn read_snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError> {
        let path = self.unit_path(unit).await?;
        let unit_proxy = self.unit_proxy(&path).await?;
        let service = ServiceProxy::builder(&self.connection)
            .path(path)
            .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
            .map_err(call_error("Service proxy"))?
            .build()
            .await
            .map_err(call_error("Service proxy"))?;
        let get = call_error("Get property");
        let load_state = unit_proxy.load_state().await.map_err(get)?;
        if load_state == "not-found" {
            return Err(SystemdError::UnitNotFound(unit.to_owned(), load_state));
        }
        let get = || call_error("Get property");
        let job_id = unit_proxy.job().await.map_err(get())?.0;
        let memory = service.memory_current().await.map_err(get())?;
        Ok(UnitSnapshot {
            unit: unit_proxy.id().await.map_err(get())?,
            load_state,
            active_state: unit_proxy.active_state().await.map_err(get())?,
            sub_state: unit_proxy.sub_state().await.map_err(get())?,
            result: service.result().await.map_err(get())?,
            exec_main_code: service.exec_main_code().await.map_err(get())?,
            exec_main_status: service.exec_main_status().await.map_err(get())?,
            n_restarts: service.n_restarts().await.map_err(get())?,
            main_pid: service.main_pid().await.map_err(get())?,
            invocation_id: hex(&unit_proxy.invocation_id().await.map_err(get())?),
            // systemd reports "unknown" as u64::MAX.
            memory_current: (memory != u64::MAX).then_some(memory),
            active_enter_timestamp_us: unit_proxy.active_enter_timestamp().await.map_err(get())?,
            state_change_timestamp_us: unit_proxy.state_change_timestamp().await.map_err(get())?,
            job_id: (job_id != 0).then_some(job_id),
            control_group: service.control_group().await.map_err(get())?,
            exec_start: service
                .exec_start()
                .await
                .map_err(get())?
                .into_iter()
                .map(|(_, argv, ..)| argv)
                .collect(),
            environment_files: service.environment_files().await.map_err(get())?,
            unit_file_state: unit_proxy.unit_file_state().await.map_err(get())?,
        })
    }
}

impl UnitControl for Systemd {
    fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, SystemdError> {
        zbus::block_on(self.read_snapshot(unit))
    }

    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        zbus::block_on(self.manager.reset_failed_unit(unit)).map_err(call_error("ResetFailedUnit"))
    }

    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        zbus::block_on(async {
            // Subscribe and open the signal stream before asking, so the JobRemoved of a
            // fast job cannot slip past us.
            self.manager
                .subscribe()
                .await
                .map_err(call_error("Subscribe"))?;
            let mut removed = self
                .manager
                .receive_job_removed()
                .await
                .map_err(call_error("JobRemoved match"))?;
            let job = self
                .manager
                .restart_unit(unit, "replace")
                .await
                .map_err(call_error("RestartUnit"))?;
            let wait = async {
                while let Some(signal) = removed.next().await {
                    let Ok(args) = signal.args() else { continue };
                    if args.job == job {
                        return Ok(JobResult(args.result));
                    }
                }
                Err(SystemdError::Call {
                    call: "JobRemoved",
                    source: Box::new(zbus::Error::Failure("signal stream ended".into())),
                })
            };
            with_timeout(timeout, wait).await
        })
    }

    fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        zbus::block_on(async {
            self.manager
                .subscribe()
                .await
                .map_err(call_error("Subscribe"))?;
            let mut removed = self
                .manager
                .receive_job_removed()
                .await
                .map_err(call_error("JobRemoved match"))?;
            let path = self.unit_path(unit).await?;
            let unit_proxy = self.unit_proxy(&path).await?;
            let (job_id, _) = unit_proxy.job().await.map_err(call_error("Get Job"))?;
            if job_id == 0 {
                return Ok(());
            }
            let wait = async {
                while let Some(signal) = removed.next().await {
                    if signal.args().is_ok_and(|args| args.id == job_id) {
                        return Ok(());
                    }
                }
                Ok(())
            };
            with_timeout(timeout, wait).await
        })
    }

    fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        zbus::block_on(async {
            let path = match self.manager.get_unit_by_pid(pid).await {
                Ok(path) => path,
                // NoUnitForPID: the process exists but belongs to no unit (or is gone).
                Err(zbus::Error::MethodError(..)) => return Ok(None),
                Err(source) => return Err(call_error("GetUnitByPID")(source)),
            };
            let unit = self.unit_proxy(&path).await?;
            Ok(Some(unit.id().await.map_err(call_error("Get Id"))?))
        })
    }

    fn reload(&self) -> Result<(), SystemdError> {
        zbus::block_on(self.manager.reload()).map_err(call_error("Reload"))
    }
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
