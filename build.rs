//! Puts the git revision into `selfheal --version` (`0.4.0 (a1b2c3d)`, `+dirty` when the tree
//! had changes); a build outside a git checkout (a crate tarball) says `unknown`.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=10", "HEAD"]).map_or_else(
        || "unknown".to_owned(),
        |rev| {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty());
            if dirty { format!("{rev}+dirty") } else { rev }
        },
    );
    println!("cargo:rustc-env=SELFHEAL_GIT_REVISION={revision}");
    // A new commit (or a branch switch) changes these.
    for path in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let reference = format!(".git/{head}");
        if std::path::Path::new(&reference).exists() {
            println!("cargo:rerun-if-changed={reference}");
        }
    }
}
