//! What selfheal reads of a unit, and how systemd's answers become a `UnitSnapshot`: the
//! properties asked (in the order their replies are decoded), their decoding, and the facts
//! derived from them (the start command that failed, the directories the unit writes to).
//! Pure: no bus here (`Systemd::read_snapshot` sends the `Get`s).

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::{ActiveState, FailedCommand, UnitSnapshot};

/// The Unit interface properties selfheal reads, in the order `unit_properties` takes them.
pub(super) const UNIT_PROPERTIES: [&str; 11] = [
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
pub(super) struct UnitProperties {
    id: Option<String>,
    pub(super) load_state: Option<String>,
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
pub(super) type Next<'a> = dyn FnMut() -> zbus::Result<OwnedValue> + 'a;

/// `UNIT_PROPERTIES` from the replies, in that order.
pub(super) fn unit_properties(next: &mut Next<'_>) -> zbus::Result<UnitProperties> {
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
pub(super) type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

/// The Service interface properties selfheal reads, in the order `service_properties` takes
/// them.
pub(super) const SERVICE_PROPERTIES: [&str; 21] = [
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
    "ExecMainPID",
    "ExecMainStartTimestamp",
    "ExecMainExitTimestampMonotonic",
];

/// The Service interface properties selfheal reads.
#[derive(Debug, Default)]
pub(super) struct ServiceProperties {
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
    exec_main_pid: u32,
    main_started_realtime_us: u64,
    main_exited_monotonic_us: u64,
}

/// `SERVICE_PROPERTIES` from the replies, in that order.
pub(super) fn service_properties(next: &mut Next<'_>) -> zbus::Result<ServiceProperties> {
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
        exec_main_pid: u32::try_from(next()?)?,
        main_started_realtime_us: u64::try_from(next()?)?,
        main_exited_monotonic_us: u64::try_from(next()?)?,
    })
}

/// The first start command that failed: `ExecStartPre=` ones, in order, then the `ExecStart=`
/// of a `Type=forking` unit (elsewhere that process is the main process, which the exit status
/// already describes). A failure the unit tolerates (`-` prefixed) is not one.
pub(super) fn failed_command(
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
pub(super) fn write_paths(service: &ServiceProperties) -> Vec<std::path::PathBuf> {
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

/// The snapshot of `unit` from its decoded properties (`load_state` already checked).
pub(super) fn snapshot_of(
    unit: &str,
    props: UnitProperties,
    load_state: String,
    service: ServiceProperties,
) -> UnitSnapshot {
    let job_id = props.job.map_or(0, |(id, _)| id);
    let memory = service.memory_current.unwrap_or(u64::MAX);
    let exec_start = service.exec_start.clone().unwrap_or_default();
    // systemd says "no limit" with u64::MAX.
    let limit = |bytes: u64| (bytes != u64::MAX).then_some(bytes);
    let writes = write_paths(&service);
    UnitSnapshot {
        unit: props.id.unwrap_or_else(|| unit.to_owned()),
        load_state,
        active_state: ActiveState::parse(&props.active_state.unwrap_or_default()),
        sub_state: props.sub_state.unwrap_or_default(),
        result: service.result.unwrap_or_default(),
        exec_main_code: service.exec_main_code.unwrap_or(0),
        exec_main_status: service.exec_main_status.unwrap_or(0),
        n_restarts: service.n_restarts.unwrap_or(0),
        main_pid: service.main_pid.unwrap_or(0),
        exec_main_pid: service.exec_main_pid,
        main_started_realtime_us: service.main_started_realtime_us,
        main_exited_monotonic_us: service.main_exited_monotonic_us,
        invocation_id: crate::host::hex(&props.invocation_id.unwrap_or_default()),
        // systemd reports "unknown" as u64::MAX.
        memory_current: (memory != u64::MAX).then_some(memory),
        active_enter_timestamp_us: props.active_enter_timestamp.unwrap_or(0),
        job_id: (job_id != 0).then_some(job_id),
        control_group: service.control_group.unwrap_or_default(),
        failed_command: failed_command(&service.exec_start_pre, &exec_start, &service.service_type),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(path: &str, ignore: bool, code: i32, status: i32) -> ExecCommand {
        let argv = vec![path.to_owned(), "--check".to_owned()];
        (path.to_owned(), argv, ignore, 0, 0, 0, 0, 42, code, status)
    }

    /// ExecStartPre=, ExecStart=, Type=, and the stage and program named.
    type Row<'a> = (
        &'a [ExecCommand],
        &'a [ExecCommand],
        &'a str,
        Option<(&'a str, &'a str)>,
    );

    /// Which start command failed, row by row: (ExecStartPre=, ExecStart=, Type=) → the stage
    /// and program named, or none.
    #[test]
    fn the_failed_start_command_table() {
        let exited = |path, status| command(path, false, 1, status);
        let rows: [Row<'_>; 7] = [
            (
                &[exited("/usr/sbin/nginx", 1)],
                &[],
                "forking",
                Some(("ExecStartPre", "/usr/sbin/nginx")),
            ),
            (
                &[exited("/bin/true", 0), exited("/bin/check", 2)],
                &[],
                "simple",
                Some(("ExecStartPre", "/bin/check")),
            ),
            (&[command("/bin/optional", true, 1, 1)], &[], "simple", None),
            (&[], &[exited("/usr/bin/app", 3)], "simple", None),
            (
                &[],
                &[command("/usr/sbin/nginx", false, 2, 9)],
                "forking",
                Some(("ExecStart", "/usr/sbin/nginx")),
            ),
            (
                &[],
                &[command("/usr/sbin/daemon", false, 3, 11)],
                "forking",
                Some(("ExecStart", "/usr/sbin/daemon")),
            ),
            (
                &[exited("/bin/true", 0)],
                &[exited("/usr/sbin/nginx", 0)],
                "forking",
                None,
            ),
        ];
        for (pre, start, service_type, expected) in rows {
            let found = failed_command(pre, start, service_type);
            assert_eq!(
                found.as_ref().map(|f| (f.stage, f.path.as_str())),
                expected,
                "{pre:?} {start:?} Type={service_type}"
            );
        }
    }

    /// systemd's "unknown" and "no limit" (u64::MAX) and "no job" (0) read as none; the units
    /// it cannot run without are Requires= and BindsTo=; the wanted causes are Wants= that are
    /// also After=; the directories it writes to come from four properties.
    #[test]
    fn decoded_properties_become_the_snapshot() {
        let props = UnitProperties {
            id: Some("web.service".to_owned()),
            active_state: Some("failed".to_owned()),
            sub_state: Some("failed".to_owned()),
            invocation_id: Some(vec![0xab, 0x01]),
            job: Some((0, OwnedObjectPath::try_from("/").unwrap())),
            requires: vec!["db.service".to_owned()],
            binds_to: vec!["vpn.service".to_owned()],
            wants: vec!["cache.service".to_owned(), "tmp.mount".to_owned()],
            after: vec!["cache.service".to_owned()],
            ..UnitProperties::default()
        };
        let service = ServiceProperties {
            memory_current: Some(u64::MAX),
            memory_max: u64::MAX,
            memory_high: 512 << 20,
            working_directory: "-/srv/web".to_owned(),
            state_directory: vec!["web".to_owned()],
            logs_directory: vec!["web".to_owned()],
            read_write_paths: vec!["-/data".to_owned(), "relative".to_owned()],
            ..ServiceProperties::default()
        };
        let snapshot = snapshot_of("web", props, "loaded".to_owned(), service);
        assert_eq!(snapshot.unit, "web.service");
        assert_eq!(snapshot.active_state, ActiveState::Failed);
        assert_eq!(snapshot.invocation_id, "ab01");
        assert_eq!(
            (
                snapshot.job_id,
                snapshot.memory_current,
                snapshot.memory_max,
                snapshot.memory_high
            ),
            (None, None, None, Some(512 << 20))
        );
        assert_eq!(snapshot.requires, ["db.service", "vpn.service"]);
        assert_eq!(snapshot.ordered_wants, ["cache.service"]);
        let writes: Vec<&str> = snapshot
            .write_paths
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect();
        assert_eq!(
            writes,
            ["/srv/web", "/var/lib/web", "/var/log/web", "/data"]
        );
        let home = ServiceProperties {
            working_directory: "~".to_owned(),
            ..ServiceProperties::default()
        };
        assert!(write_paths(&home).is_empty(), "the user's home is left out");
    }
}
