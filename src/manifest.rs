//! Reading manifests for the offline commands: files, directories
//! (recursively, *.yaml, *.yml, *.json), `-` for stdin; multi-document
//! YAML; `kind: List`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One object and where it came from: `<file>#<document>` (1-based).
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub object: Value,
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                collect_files(&entry, out)?;
            } else if matches!(
                entry.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(entry);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Parses one file's text into documents; `List` kinds are expanded.
pub fn parse_text(name: &str, text: &str) -> Result<Vec<Document>, String> {
    let mut docs = Vec::new();
    let is_json =
        name.ends_with(".json") || text.trim_start().starts_with('{') && !text.contains("\n---");
    let raw: Vec<Value> = if is_json && name.ends_with(".json") {
        let mut out = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            out.push(v.map_err(|e| format!("{name}#{}: {e}", i + 1))?);
        }
        out
    } else {
        let mut out = Vec::new();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            out.push(Value::deserialize(doc).map_err(|e| format!("{name}#{}: {e}", i + 1))?);
        }
        out
    };
    for (i, value) in raw.into_iter().enumerate() {
        let source = format!("{name}#{}", i + 1);
        match value {
            Value::Null => {}
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.get("items").is_some() =>
            {
                let items = m
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (j, item) in items.into_iter().enumerate() {
                    docs.push(Document {
                        source: format!("{source}.items[{j}]"),
                        object: item,
                    });
                }
            }
            Value::Object(_) => docs.push(Document {
                source,
                object: value,
            }),
            _ => {
                return Err(format!(
                    "{source}: not a Kubernetes object (a mapping with kind)"
                ));
            }
        }
    }
    Ok(docs)
}

/// Reads every path; an error names the file and document.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, String> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("stdin: {e}"))?;
            docs.extend(parse_text("-", &text)?);
            continue;
        }
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{}: not UTF-8 text", file.display()))?;
            docs.extend(parse_text(&file.display().to_string(), &text)?);
        }
    }
    Ok(docs)
}

/// Objects as multi-document YAML.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(o).expect("a JSON value serializes as YAML"));
    }
    out
}
