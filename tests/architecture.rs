//! Imports point one way: a pure core (k8s, config, record, model,
//! policy, mutate, admission) and a thin shell (cluster, server, cli) around
//! it. Every `crate::` path in src/ is read, and a module may only name
//! modules of a lower layer (docs/architecture.md, "Layers"). A new module
//! must be given its layer here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("k8s", 0),
    ("certs", 0),
    ("manifest", 0),
    ("flags", 0),
    ("logging", 0),
    ("config", 1),
    ("record", 1),
    ("rule", 0),
    ("telemetry", 0),
    ("plain_http", 0),
    ("config_file", 2),
    ("install", 2),
    ("model", 2),
    ("policy", 3),
    ("mutate", 4),
    ("report", 4),
    ("admission", 5),
    ("convert", 5),
    ("laws", 6),
    ("cluster", 7),
    ("server", 8),
    ("cli", 9),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Top-level modules a file names through `crate::`.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        // `use crate::{a, b::c}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn imports_point_from_the_shell_to_the_core_and_never_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            violations.push(format!("{}: module {module} has no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in imports(&text) {
            if target == module {
                continue;
            }
            match layers.get(target.as_str()) {
                Some(&layer) if layer < own => {}
                Some(&layer) => violations.push(format!(
                    "{}: {module} (layer {own}) imports {target} (layer {layer})",
                    file.strip_prefix(&src).unwrap().display()
                )),
                None => violations.push(format!(
                    "{}: imports crate::{target}, which has no layer",
                    file.display()
                )),
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "\n{}", violations.join("\n"));
}

#[test]
fn the_import_reader_sees_paths_groups_and_skips_comments() {
    let text = "use crate::policy::Rule;\nuse crate::{k8s, model::Object};\n// crate::cli\nlet x = crate::server::run();";
    assert_eq!(imports(text), ["policy", "k8s", "model", "server"]);
}
