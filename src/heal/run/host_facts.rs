//! What the host adds to systemd's facts: the full file system the service writes to, and the
//! kernel's account of an OOM kill.

use crate::config::ServiceConfig;
use crate::heal::diagnose::Diagnosis;
use crate::systemd::UnitSnapshot;

/// What the host adds to systemd's facts before acting: a full file system the service
/// writes to (it decides the first action: a restart cannot free space). The kernel's account
/// of an OOM kill decides nothing and is read after acting ([`kernel_oom`]).
pub(super) fn host_facts(service: &ServiceConfig, diagnosis: Diagnosis) -> Diagnosis {
    let full = full_disk(service, &diagnosis);
    diagnosis.full_disk(full)
}

/// The kernel's account of an OOM kill where systemd saw only a SIGKILL: read from the
/// kernel's log once the run has queued its restart (or will not restart), because it never
/// changes what runs first and reading the log costs the crash path milliseconds.
pub(super) fn kernel_oom(snapshot: &UnitSnapshot, diagnosis: Diagnosis) -> Diagnosis {
    let sigkill = matches!(
        &diagnosis.termination,
        crate::heal::diagnose::Termination::Killed { signal } if signal == "SIGKILL"
    );
    if !sigkill || diagnosis.result == "oom-kill" || diagnosis.oom_kill.is_some() {
        return diagnosis;
    }
    let oom = crate::host::kernel_log::oom_kill_in(&snapshot.unit, snapshot.main_run());
    diagnosis.killed_by_oom(snapshot, oom)
}

/// A full file system among those the service writes to: its unit's directories, the files
/// `database_check` looks after (those its ENOSPC messages name first; a journal line never
/// makes root look at a path of its choosing: an automount, a hung share), and,
/// when it says the disk is full but none of those is, the host's usual places.
pub(super) fn full_disk(
    service: &ServiceConfig,
    diagnosis: &Diagnosis,
) -> Option<crate::host::disk::DiskUsage> {
    use crate::heal::diagnose::Symptom;
    let mut own: Vec<std::path::PathBuf> = diagnosis.write_paths.clone();
    if let Some(check) = &service.database_check {
        own.extend(check.files.iter().map(|file| file.path.clone()));
    }
    let mut paths = own.clone();
    let mut says_full = false;
    for line in &diagnosis.journal {
        if Symptom::detect(std::slice::from_ref(line)).contains(&Symptom::DiskFull) {
            says_full = true;
            // The declared directory a named path is in is what is measured, never the
            // named path itself (a `..` or a symlink the service made could lead anywhere).
            for named in crate::host::disk::paths_in(&line.message) {
                if let Some(dir) = own.iter().find(|dir| named.starts_with(dir))
                    && !paths.contains(dir)
                {
                    paths.push(dir.clone());
                }
            }
        }
    }
    if says_full {
        paths.extend(
            crate::host::disk::USUAL_PLACES
                .iter()
                .map(std::path::PathBuf::from),
        );
    }
    crate::host::disk::first_full(paths.iter().map(std::path::PathBuf::as_path))
}

/// What held the memory, when the unit was killed for want of it (`Result=oom-kill`, or the
/// kernel's account of a SIGKILL): its tasks as the kernel listed them at the kill, and the
/// host's largest processes now. Read after acting: it does not change what runs first.
pub(super) fn memory_hogs(
    snapshot: &UnitSnapshot,
    diagnosis: &Diagnosis,
) -> Option<crate::heal::diagnose::MemoryHogs> {
    if diagnosis.result != "oom-kill" && diagnosis.oom_kill.is_none() {
        return None;
    }
    let kill = diagnosis
        .oom_kill
        .clone()
        .or_else(|| crate::host::kernel_log::oom_kill_in(&snapshot.unit, snapshot.main_run()));
    let (at_the_kill, listed) =
        kill.map_or_else(Default::default, |kill| (kill.consumers, kill.listed));
    Some(crate::heal::diagnose::MemoryHogs {
        at_the_kill,
        listed,
        on_the_host: crate::host::evidence::largest_on_host(3),
    })
}
