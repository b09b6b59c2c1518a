//! The README's examples, run. Every ```console block whose first command
//! is `$ pvc-guard ...` is run as a terminal session: from the repository
//! root, with the built binary first on PATH, each `$ ` line a command
//! (`\` at the end continues it) followed by what it prints, stdout and
//! stderr as the terminal interleaves them. `$ echo $?` shows the exit
//! code of the command before it. What each command prints must be what
//! the README shows, byte for byte.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, run_command};

/// One command of a console block and what the README says it prints.
#[derive(Debug)]
struct Step {
    command: String,
    shown: String,
}

/// The console blocks of `markdown` that run pvc-guard, each with the
/// line it starts on.
fn console_blocks(markdown: &str) -> Vec<(usize, Vec<Step>)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim_end() != "```console" {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut continued = false;
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            if continued {
                let step = steps.last_mut().expect("a command continues");
                step.command.push('\n');
                step.command.push_str(line);
                continued = line.ends_with('\\');
            } else if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.to_string(),
                    shown: String::new(),
                });
                continued = command.ends_with('\\');
            } else {
                let step = steps
                    .last_mut()
                    .unwrap_or_else(|| panic!("README.md:{}: output before any command", n + 1));
                step.shown.push_str(line);
                step.shown.push('\n');
            }
        }
        if steps
            .first()
            .is_some_and(|s| s.command.starts_with("pvc-guard "))
        {
            blocks.push((n + 1, steps));
        }
    }
    blocks
}

/// Separates the commands' outputs in one shell session.
const MARK: &str = "\u{1e}pvc-guard-readme-step\u{1e}";

/// Runs `steps` in one bash session from `root` and returns what each
/// printed.
fn run(root: &Path, steps: &[Step]) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    // Each step starts with the exit code of the one before it in $?, so
    // that `echo $?` shows it, and the mark before it on the output.
    let mut script = String::from("exec 2>&1\nstatus=0\n");
    for step in steps {
        script.push_str(&format!(
            "printf '%s\\n' '{MARK}'\n(exit $status)\n{}\nstatus=$?\n",
            step.command
        ));
    }
    let mut command = Command::new("bash");
    command
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(root)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG");
    let (_, out, _) = run_command(command, None);
    let mut parts: Vec<String> = out
        .split(&format!("{MARK}\n"))
        .map(str::to_string)
        .collect();
    assert_eq!(parts.remove(0), "", "nothing before the first command");
    parts
}

/// Item 10: the README's pvc-guard examples print what they show.
#[test]
fn every_pvc_guard_console_example_in_the_readme_prints_what_it_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = console_blocks(&readme);
    assert!(
        blocks.len() >= 3,
        "README.md has {} pvc-guard console blocks",
        blocks.len()
    );
    for (line, steps) in &blocks {
        let printed = run(root, steps);
        assert_eq!(printed.len(), steps.len(), "README.md:{line}");
        for (step, printed) in steps.iter().zip(&printed) {
            assert!(
                *printed == step.shown,
                "README.md:{line}: `{}` prints\n{printed}\n--- where the README shows\n{}",
                step.command,
                step.shown
            );
        }
    }
}

/// The runner itself: `echo $?` shows the exit code of the command
/// before it, a `\` continues a command, stderr is interleaved.
#[test]
fn the_runner_runs_a_session_as_a_terminal_shows_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let markdown = "```console\n$ pvc-guard check -f - < /dev/null\nno objects in the input\n$ echo $?\n0\n$ pvc-guard check \\\n    -f examples/postgres-no-volume.yaml >/dev/null\n1 objects: 1 denied, 0 warned, 1 fixable by pvc-guard fix, 0 unreadable\n$ echo $?\n1\n```\n";
    let blocks = console_blocks(markdown);
    assert_eq!(blocks.len(), 1);
    let steps = &blocks[0].1;
    assert_eq!(steps.len(), 4);
    let printed = run(root, steps);
    let shown: Vec<&str> = steps.iter().map(|s| s.shown.as_str()).collect();
    assert_eq!(printed, shown);
    // Blocks that do not start with pvc-guard are not run.
    assert!(console_blocks("```console\n$ kubectl get pods\n```\n").is_empty());
}

/// Does a `.dockerignore` pattern leave `path` out of the build context?
/// (The patterns the file uses: a path, `dir/`, `*.ext`, `**/dir/`.)
fn ignored(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    if let Some(name) = pattern.strip_prefix("**/") {
        path.split('/').any(|part| part == name)
    } else if let Some(ext) = pattern.strip_prefix('*') {
        !path.contains('/') && path.ends_with(ext)
    } else {
        path == pattern || path.starts_with(&format!("{pattern}/"))
    }
}

/// The image the README builds (`docker build .`) gets every file cargo
/// reads to build the binary: the build script, the file of every
/// target the manifest declares (cargo reads them all, benchmarks too) and
/// the manifests build.rs embeds,
/// each copied in by the builder stage and not left out by .dockerignore.
#[test]
fn the_container_image_build_gets_every_file_cargo_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let manifest = read("Cargo.toml");
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match (section.as_str(), key.trim()) {
            ("[package]", "build") | (_, "path") => needed.push(value.to_string()),
            ("[[bench]]", "name") if !manifest.contains(&format!("benches/{value}")) => {
                needed.push(format!("benches/{value}.rs"))
            }
            _ => {}
        }
    }
    for file in &needed {
        assert!(root.join(file).exists(), "{file} is in the repository");
    }
    assert!(needed.iter().any(|f| f == "build.rs"), "{needed:?}");
    // build.rs embeds manifests/ for `pvc-guard install`.
    needed.extend(
        pvc_guard::install::MANIFESTS
            .iter()
            .map(|(path, _)| format!("manifests/{path}")),
    );

    let dockerfile = read("Dockerfile");
    let builder = dockerfile.split("\nFROM ").nth(1).expect("a builder stage");
    let copied: Vec<&str> = builder
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].to_vec()
        })
        .map(|w| w.trim_end_matches('/'))
        .collect();
    let dockerignore = read(".dockerignore");
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for file in &needed {
        assert!(
            copied
                .iter()
                .any(|c| file == c || file.starts_with(&format!("{c}/"))),
            "the Dockerfile's builder stage does not copy {file}: {copied:?}"
        );
        assert!(
            !patterns.iter().any(|p| ignored(p, file)),
            ".dockerignore leaves out {file}"
        );
    }
}
