//! The sandbox's commands: `selfheal demo` (a throwaway systemd that crashes and heals an
//! example service), `serve-demo` (the demo's HTTP service) and `sandbox-init` (PID 1 of the
//! sandbox, before it becomes systemd).

use crate::Error;
use crate::exit_code::ExitCode;

pub(super) fn serve(port: u16, say: Option<&str>, status: u16) -> Result<ExitCode, Error> {
    crate::sandbox::demo_service::serve(port, say, status).map_err(Error::Internal)?;
    Ok(ExitCode::Success)
}

pub(super) fn execute() -> Result<ExitCode, Error> {
    let exe = std::env::current_exe().map_err(Error::Output)?;
    crate::sandbox::demo::run(&exe).map_err(Error::Internal)?;
    Ok(ExitCode::Success)
}

pub(super) fn sandbox_init(args: crate::cli::SandboxInitArgs) -> Result<ExitCode, Error> {
    let boot = crate::sandbox::Boot {
        units: args.units,
        unified_only: args.unified_only,
        root: args.root,
        bind: args.bind,
    };
    match crate::sandbox::init(&boot) {
        Ok(()) => Ok(ExitCode::Success),
        // Anywhere but PID 1 it is a wrong use (exit 2), not a failure of the machinery.
        Err(err) => Err(match err.downcast::<crate::sandbox::NotPidOne>() {
            Ok(refusal) => crate::UsageError(refusal.to_string()).into(),
            Err(err) => Error::Internal(err),
        }),
    }
}
