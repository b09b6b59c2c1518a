//! Records the git commit the binary is built from, for `pvc-guard version`.
//! Outside a git checkout (a source archive) the commit is "unknown".
//!
//! Embeds manifests/ for `pvc-guard install`: `$OUT_DIR/manifests.rs` lists
//! every file under it with `include_str!`, so the binary prints the
//! manifests the repository ships, not a copy that could drift from them.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The files under `dir`, relative to `root`, with `/` separators, sorted.
fn files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under the root");
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
}

fn embed_manifests() {
    let crate_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = crate_dir.join("manifests");
    let mut names = Vec::new();
    files(&root, &root, &mut names);
    let mut code = String::from("&[\n");
    for name in &names {
        let path = root.join(name);
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("]\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("manifests.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    // A directory makes Cargo look at every file under it, new ones too.
    println!("cargo:rerun-if-changed=manifests");
}

fn main() {
    embed_manifests();
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PVC_GUARD_COMMIT={commit}");
    // Built again when HEAD moves: a new commit or another branch. The
    // paths come from git, as a worktree keeps them elsewhere.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &reference]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
