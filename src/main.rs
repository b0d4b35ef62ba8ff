//! The `selfheal` binary: parse, set up logging, call the library, print an error once, exit.

use clap::Parser;

fn main() {
    // Like other Unix tools: `selfheal history | head` ends quietly instead of panicking.
    // SAFETY: called before any other thread exists; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `COMPLETE=bash selfheal …`: the shell asks for completions (see `selfheal completions`).
    clap_complete::CompleteEnv::with_factory(<selfheal::cli::Cli as clap::CommandFactory>::command)
        .complete();
    let cli = selfheal::cli::Cli::parse();
    let verbosity = if cli.quiet {
        -1
    } else {
        i8::try_from(cli.verbose).unwrap_or(i8::MAX)
    };
    selfheal::logging::init(verbosity);
    let code = match selfheal::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Every cause is part of the message once; there is no chain to walk.
            eprintln!("selfheal: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code.into());
}
