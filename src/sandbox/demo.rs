//! `selfheal demo`: the real thing, without touching the host's services. Boots a throwaway
//! systemd, runs the example config's first service (served by selfheal's built-in demo
//! service), installs the heal unit and OnFailure= drop-in, crashes the service with SIGKILL,
//! and prints what the OnFailure= run did.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::deploy::{self, Invocation};
use crate::sandbox::{Sandbox, free_port, wait_for};
use crate::state::StateDir;

/// The commented example config, built into the binary.
pub(crate) const EXAMPLE_CONFIG: &str = include_str!("../../config/selfheal.example.yml");

/// Runs the demo and prints its story on stdout.
pub(crate) fn run(selfheal: &Path) -> anyhow::Result<()> {
    let mut config = Config::parse(EXAMPLE_CONFIG, Path::new("(embedded example)"))?;
    config.email = None;
    config.monitored_services.truncate(1);
    let service = config
        .monitored_services
        .first_mut()
        .context("the example has no service")?;
    // The example's port may be taken on this host (the sandbox shares its network).
    let port = free_port()?;
    service.port = Some(port);
    service.health_url = Some(
        crate::heal::verify::HealthUrl::parse(&format!("http://127.0.0.1:{port}/health"))
            .map_err(anyhow::Error::msg)?,
    );
    let name = service.name.clone();
    let unit = service.unit_name();

    println!("▶ booting a throwaway systemd (own PID/mount namespaces, journald, D-Bus)…");
    let sandbox = Sandbox::boot(selfheal)?;
    let config_path = sandbox.scratch_dir().join("selfheal.yml");
    let state_dir = sandbox.scratch_dir().join("state");
    std::fs::write(&config_path, serde_saphyr::to_string(&config)?)?;
    sandbox.add_unit(
        &unit,
        &format!(
            "[Unit]\nDescription={name} (selfheal demo service)\n[Service]\nExecStart={} serve-demo --port {port} --say \"{name} is up\"\n",
            selfheal.display()
        ),
    )?;
    let invocation = Invocation {
        executable: selfheal.to_owned(),
        config: Some(config_path.clone()),
        state_dir: Some(state_dir.clone()),
    };
    deploy::write_files(&deploy::planned_files(
        &config,
        &invocation,
        &sandbox.unit_dir(),
    ))?;
    sandbox.systemctl(["daemon-reload"])?;
    println!(
        "▶ installed {} and {unit}.d/50-selfheal.conf (OnFailure={})",
        config.monitored_services[0].heal_unit_name(),
        config.monitored_services[0].heal_unit_name()
    );
    sandbox.systemctl(["start", &unit])?;
    wait_for(Duration::from_secs(10), || {
        crate::host::ports::is_listening(port)
    })
    .context("the demo service did not start")?;
    let pid = sandbox.property(&unit, "MainPID")?;
    println!("▶ {unit} is running (PID {pid} inside the sandbox), listening on 127.0.0.1:{port}");

    println!("▶ crashing it: systemctl kill --signal=SIGKILL {unit}");
    let crashed = Instant::now();
    sandbox.systemctl(["kill", "--signal=SIGKILL", &unit])?;
    wait_for(Duration::from_secs(5), || {
        !crate::host::ports::is_listening(port)
    })
    .ok();
    let state = StateDir::new(&state_dir);
    wait_for(Duration::from_secs(60), || {
        crate::host::ports::is_listening(port)
    })
    .context("the service did not come back")?;
    let back = crashed.elapsed();
    wait_for(Duration::from_secs(60), || {
        state.history().is_ok_and(|h| !h.is_empty())
    })
    .context("the OnFailure= run did not record an outcome")?;
    println!(
        "▶ listening again {} ms after the kill; the heal unit printed:\n",
        back.as_millis()
    );
    let journal = sandbox
        .command("journalctl")
        .args(["--no-pager", "-o", "cat", "-u"])
        .arg(config.monitored_services[0].heal_unit_name())
        .output()?;
    print!("{}", String::from_utf8_lossy(&journal.stdout));
    let record = state.history()?.pop().context("empty history")?;
    println!("\n▶ history.jsonl: {}", serde_json::to_string(&record)?);
    if record.outcome != crate::outcome::Outcome::Resolved {
        bail!("the demo service was not healed: {}", record.outcome);
    }
    println!("▶ done; the sandbox is torn down and nothing on this host was changed.");
    Ok(())
}
