//! Records the git commit the binary is built from (`tessera bench` writes it
//! into its records) as `TESSERA_GIT_COMMIT`; nothing when git or the checkout
//! is missing (the bench then says "unknown").

use std::process::Command;

fn main() {
    let head = std::path::Path::new("../../.git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed=../../.git/HEAD");
        println!("cargo:rerun-if-changed=../../.git/index");
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(commit) = commit {
        // --no-optional-locks: a plain `git status` refreshes and rewrites
        // .git/index, which this script watches, so each profile's build
        // would make the other's rerun (and rebuild the binary) next time.
        let dirty = Command::new("git")
            .args([
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
            ])
            .output()
            .ok()
            .is_some_and(|out| !out.stdout.is_empty());
        let suffix = if dirty { "-dirty" } else { "" };
        println!("cargo:rustc-env=TESSERA_GIT_COMMIT={commit}{suffix}");
    }
}
