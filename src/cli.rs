//! The command line (clap derive). Its `///` lines are the `--help` text. Nothing below the
//! commands in `commands/` sees these types: they are turned into `Config` and plain arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;

/// `0.4.0 (a1b2c3d4e5)`: the version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SELFHEAL_GIT_REVISION"),
    ")"
);

/// What the shell completes for a SERVICE argument: the names in the config that
/// `$SELFHEAL_CONFIG` (or the default path) names. A config that cannot be read completes
/// nothing.
fn service_names() -> Vec<clap_complete::CompletionCandidate> {
    let path = std::env::var_os("SELFHEAL_CONFIG").map_or_else(
        || PathBuf::from(crate::config::DEFAULT_CONFIG_PATH),
        PathBuf::from,
    );
    crate::config::Config::load(&path)
        .map(|config| {
            config
                .monitored_services
                .iter()
                .map(|service| {
                    clap_complete::CompletionCandidate::new(&service.name)
                        .help(Some(service.unit_name().into()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Heal failed systemd services and tell their owner what happened.
#[derive(Debug, Parser)]
#[command(name = "selfheal", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Config file
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "SELFHEAL_CONFIG",
        default_value = crate::config::DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    /// State directory
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "SELFHEAL_STATE_DIR",
        default_value = crate::state::DEFAULT_STATE_DIR
    )]
    pub state_dir: PathBuf,

    /// More log output (-v: debug, -vv: trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors in the log output
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Accepted for systemctl's habit; selfheal never pages its output
    #[arg(long, global = true)]
    pub no_pager: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Heal one service (what its OnFailure= unit runs)
    Run(RunArgs),
    /// Show the dashboard: the host, every monitored service, recent healing; exit 1 when a
    /// shown service is not active and healthy
    Status(StatusArgs),
    /// Validate the config; exit 0 when valid, 2 when not
    Check,
    /// Write the heal units and OnFailure= drop-ins, then reload systemd
    Install(InstallArgs),
    /// Remove exactly what install wrote
    Uninstall(UninstallArgs),
    /// Show past healing runs
    History(HistoryArgs),
    /// Deliver reports queued in the outbox
    Flush,
    /// Pause healing of services (a deploy, a backup): their failures are recorded, not
    /// healed or told, until the pause ends; then a service still down is healed
    Pause(PauseArgs),
    /// End a pause now; a service still down is healed at once
    Resume(ResumeArgs),
    /// Look at the restarts systemd made by itself since the last look: record them where
    /// OnFailure= does not fire for them, report a crash loop once (selfheal-watch.timer)
    Watch,
    /// Print monitored_services entries for the running services that listen on a port and
    /// are not monitored yet (name, port, a health_url when / answers 2xx); changes nothing
    Discover,
    /// One round of health probes: look at every probed, active service as its clients do
    /// and start the heal unit of one that failed `probe.failures` rounds in a row
    /// (selfheal-probe.timer); exit 1 when a probed service failed
    Probe(ProbeArgs),
    /// Answer Alertmanager's webhooks: each firing alert whose `service` label names a service
    /// selfheal heals on this host starts its heal (what selfheal-receiver.service runs, on the
    /// socket of selfheal-receiver.socket; by hand it listens on receiver.listen itself)
    Receive(ReceiveArgs),
    /// Print and mail the summary of the last 24 h: per service runs, success rate, mean time
    /// to heal; loop protection's episodes; the outbox
    Digest(DigestArgs),
    /// Send a test report through the configured mail transport
    TestEmail,
    /// Send a test through every channel (the mail, each webhook, each Alertmanager) and say
    /// what each answered; exit 1 when one failed
    TestNotify,
    /// Heal an example service in a throwaway systemd (needs root; touches nothing of the host)
    Demo,
    /// Print the shell code that completes selfheal's commands, options and the service names
    /// of the config (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff), or write them all into a man directory
    Man(ManArgs),
    /// A tiny HTTP service with /health, used by `demo`, tests and benchmarks
    #[command(hide = true)]
    ServeDemo {
        /// Port to listen on (127.0.0.1)
        #[arg(long)]
        port: u16,
        /// Print this line before serving (shows up in the journal)
        #[arg(long)]
        say: Option<String>,
        /// HTTP status to answer every request with (503 plays a listening but unhealthy service)
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Inside the sandbox namespaces: mount /run and cgroups, then exec systemd
    #[command(hide = true)]
    SandboxInit(SandboxInitArgs),
}

/// Arguments of `run`.
// Command-line flags, each its own switch.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The monitored service (its `name`, with or without .service)
    #[arg(add = ArgValueCandidates::new(service_names))]
    pub service: String,
    /// Decide and print the plan, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Send the report nowhere: no mail, no webhook, no alert
    #[arg(long, alias = "no-notify")]
    pub no_email: bool,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
    /// A person's run: heal even under loop protection, end the episode and start its count
    /// afresh (at a terminal, selfheal asks instead when loop protection holds)
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The services (their `name`; an unlisted unit when all_services: is on)
    #[arg(add = ArgValueCandidates::new(service_names), required_unless_present = "all")]
    pub services: Vec<String>,
    /// Every service
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
    /// How long (systemd's time syntax: 30min, 2h, 1d); at most 7d
    #[arg(long = "for", default_value = "1h", value_name = "DURATION")]
    pub duration: crate::ui::duration::HumanDuration,
    /// Why, shown by status and recorded with every run it holds
    #[arg(long)]
    pub reason: Option<String>,
}

/// Arguments of `receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Exit after this long without a request (systemd starts it again at the next); 0: never
    #[arg(long, default_value = "5min", value_name = "DURATION")]
    pub idle: crate::ui::duration::HumanDuration,
}

/// Arguments of `resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The services whose pause ends now
    #[arg(add = ArgValueCandidates::new(service_names), required_unless_present = "all")]
    pub services: Vec<String>,
    /// Every pause, of all services and of each
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these monitored services (their `name`, with or without .service)
    #[arg(add = ArgValueCandidates::new(service_names))]
    pub services: Vec<String>,
    /// Print one JSON object instead of the dashboard
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Only these monitored services (their `name`, with or without .service)
    #[arg(add = ArgValueCandidates::new(service_names))]
    pub services: Vec<String>,
    /// Print one JSON object per service (name, ok, judged, failures, failures_to_heal,
    /// detail, healing_started), as a JSON array
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this service
    #[arg(add = ArgValueCandidates::new(service_names))]
    pub service: Option<String>,
    /// Only runs since this time, as journalctl takes it: 24h, -2h, "2h ago", today,
    /// yesterday, 2026-11-18, "2026-11-18 10:00", 10:00
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<crate::ui::when::Since>,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
    /// Per-service figures instead of the runs: runs by outcome, success rate, mean time to
    /// heal
    #[arg(long)]
    pub stats: bool,
}

/// Arguments of `digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// Only print it
    #[arg(long)]
    pub no_email: bool,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page: selfheal (the default), selfheal-<command>, or selfheal.yml
    #[arg(default_value = "selfheal")]
    pub page: String,
    /// Write every page into DIR/man1 and DIR/man5 instead (e.g. /usr/local/share/man)
    #[arg(long, value_name = "DIR", conflicts_with = "page")]
    pub dir: Option<PathBuf>,
}

/// Arguments of `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Where unit files go
    #[arg(long, default_value = "/etc/systemd/system", value_name = "DIR")]
    pub unit_dir: PathBuf,
    /// Do not run daemon-reload afterwards
    #[arg(long)]
    pub no_reload: bool,
    /// Print what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Where unit files are
    #[arg(long, default_value = "/etc/systemd/system", value_name = "DIR")]
    pub unit_dir: PathBuf,
    /// Do not run daemon-reload afterwards
    #[arg(long)]
    pub no_reload: bool,
}

/// Arguments of the hidden `sandbox-init`.
#[derive(Debug, Args)]
pub struct SandboxInitArgs {
    /// The unit directory systemd loads (and nothing else)
    #[arg(long)]
    pub units: PathBuf,
    /// Mount only cgroup2 (pure cgroup v2 host)
    #[arg(long)]
    pub unified_only: bool,
    /// Boot the systemd of this Debian tree, chrooted into it (cgroup2 only)
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// A host directory that appears at the same path inside the tree
    #[arg(long)]
    pub bind: Vec<PathBuf>,
}
