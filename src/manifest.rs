//! Manifests for the offline commands: files, directories (recursively,
//! `*.yaml`, `*.yml`, `*.json`), `-` for stdin; multi-document YAML; `List`
//! kinds. A document that cannot be read is reported with its file and
//! position, and the rest are still read. Output is YAML that kubectl
//! (a YAML 1.1 reader) reads back as the same strings.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One object and where it came from: `<file>#<document>` (1-based).
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub object: Value,
    /// The document's own YAML text, to print unchanged; `None` for JSON
    /// input and for the items of a `List`.
    pub text: Option<String>,
}

/// Something in the input that is not an object pvc-guard can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub reason: String,
}

/// What the input held.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    /// Unreadable files and documents: reported, the rest still read.
    pub unreadable: Vec<Problem>,
    /// Files left out on purpose (kustomization files and the patches they
    /// name), with why.
    pub skipped: Vec<Problem>,
}

const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Files a kustomization in `dir` reads that are not objects of their own
/// (patches, replacements, generator inputs), by canonical path, each with
/// why it is skipped. A patch often sits in a directory of its own
/// (`patches/`) or beside the overlay (`../common/`), so these are
/// collected for the whole scan, not per directory.
fn kustomization_inputs(dir: &Path, out: &mut BTreeMap<PathBuf, &'static str>) {
    let Some(text) = KUSTOMIZATION_FILES
        .iter()
        .find_map(|name| std::fs::read_to_string(dir.join(name)).ok())
    else {
        return;
    };
    let Ok(k) = serde_yaml_ng::from_str::<Value>(&text) else {
        return;
    };
    let mut named = |p: &str, why: &'static str| {
        // An inline patch is YAML text, not a path.
        if !p.contains('\n')
            && let Ok(path) = std::fs::canonicalize(dir.join(p))
        {
            out.entry(path).or_insert(why);
        }
    };
    const PATCH: &str = "a patch the kustomization applies, not an object of its own";
    for key in ["patches", "patchesStrategicMerge", "patchesJson6902"] {
        for entry in k.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(p) = entry
                .as_str()
                .or_else(|| entry.get("path").and_then(Value::as_str))
            {
                named(p, PATCH);
            }
        }
    }
    for entry in k
        .get("replacements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = entry.get("path").and_then(Value::as_str) {
            named(p, "replacements the kustomization reads, not an object");
        }
    }
    for key in ["configMapGenerator", "secretGenerator"] {
        for generator in k.get(key).and_then(Value::as_array).into_iter().flatten() {
            for field in ["files", "envs", "env"] {
                let values = match generator.get(field) {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    Some(Value::String(s)) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                for v in values {
                    // `files` entries may be `key=path`.
                    let p = v.split_once('=').map_or(v, |(_, p)| p);
                    named(p, "data a kustomization generator reads, not an object");
                }
            }
        }
    }
}

/// Every file under `path` to read, recursively; kustomization files are
/// noted as skipped, and what they name as inputs is gathered in `inputs`.
fn collect_files(
    path: &Path,
    out: &mut Vec<PathBuf>,
    inputs: &mut BTreeMap<PathBuf, &'static str>,
    loaded: &mut Loaded,
) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            loaded.unreadable.push(Problem {
                source: path.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    entries.sort();
    kustomization_inputs(path, inputs);
    for entry in entries {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if entry.is_dir() {
            collect_files(&entry, out, inputs, loaded);
        } else if KUSTOMIZATION_FILES.contains(&name) {
            loaded.skipped.push(Problem {
                source: entry.display().to_string(),
                reason: "a kustomization file, not an object".into(),
            });
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
}

/// The files to read for one path given: the file itself, or the files of
/// a directory without the kustomizations' inputs (noted as skipped).
fn files_of(path: &Path, loaded: &mut Loaded) -> Vec<PathBuf> {
    match std::fs::metadata(path) {
        Err(e) => {
            loaded.unreadable.push(Problem {
                source: path.display().to_string(),
                reason: e.to_string(),
            });
            Vec::new()
        }
        // A file named on the command line is read, whatever it is.
        Ok(meta) if !meta.is_dir() => vec![path.to_path_buf()],
        Ok(_) => {
            let mut files = Vec::new();
            let mut inputs = BTreeMap::new();
            collect_files(path, &mut files, &mut inputs, loaded);
            files.retain(|file| {
                let why = std::fs::canonicalize(file)
                    .ok()
                    .and_then(|c| inputs.get(&c).copied());
                if let Some(why) = why {
                    loaded.skipped.push(Problem {
                        source: file.display().to_string(),
                        reason: why.into(),
                    });
                }
                why.is_none()
            });
            files
        }
    }
}

/// One document of a YAML stream: `text` as written (its `---` line, its
/// comments, a closing `...`), `body` what a YAML reader parses.
#[derive(Default)]
struct Chunk {
    text: String,
    body: String,
}

/// A `---` line: it starts a document; what follows it on the line
/// belongs to the document.
fn marker(bare: &str) -> Option<&str> {
    let rest = bare.strip_prefix("---")?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.trim_start())
}

/// The documents of a YAML stream, split at `---` lines. A `---` at the
/// start of a line always starts a document in YAML, so splitting there
/// agrees with any YAML reader.
fn yaml_documents(text: &str) -> Vec<Chunk> {
    let mut docs = vec![Chunk::default()];
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = marker(bare) {
            let mut body = rest.to_string();
            if !body.is_empty() {
                body.push('\n');
            }
            docs.push(Chunk {
                text: line.to_string(),
                body,
            });
        } else if bare == "..." {
            docs.last_mut().expect("never empty").text.push_str(line);
            docs.push(Chunk::default());
        } else {
            let last = docs.last_mut().expect("never empty");
            last.text.push_str(line);
            last.body.push_str(line);
        }
    }
    docs
}

/// Only comments and blank lines.
fn blank(doc: &str) -> bool {
    doc.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// The lines that open a document's text before its content: blank lines,
/// comments and a bare `---` (or `--- # comment`), which a rewritten
/// document keeps.
pub fn preamble(text: &str) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']).trim();
        let opening = bare.is_empty()
            || bare.starts_with('#')
            || marker(bare).is_some_and(|rest| rest.is_empty() || rest.starts_with('#'));
        if !opening {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

/// Does this document's text start a document of its own (a `---` line
/// before its content), so that no separator is needed before it?
pub fn opens_document(text: &str) -> bool {
    preamble(text)
        .lines()
        .any(|l| marker(l.trim_end_matches('\r')).is_some())
}

/// Reads one file's text into documents; `List` kinds are expanded.
pub fn parse_text(name: &str, text: &str, loaded: &mut Loaded) {
    let json = name.ends_with(".json");
    let mut raw: Vec<(String, Result<Value, String>, Option<String>)> = Vec::new();
    if json {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let stop = v.is_err();
            raw.push((
                format!("{name}#{}", i + 1),
                v.map_err(|e| e.to_string()),
                None,
            ));
            if stop {
                break;
            }
        }
    } else {
        // Comments between documents (a file's header, say) go with the
        // document after them, or the last one, so that `fix` prints a
        // file it does not change exactly as it was.
        let mut pending = String::new();
        let mut n = 0;
        for chunk in yaml_documents(text) {
            if blank(&chunk.body) {
                pending.push_str(&chunk.text);
                continue;
            }
            n += 1;
            let parsed = serde_yaml_ng::from_str::<Value>(&chunk.body).map_err(|e| e.to_string());
            let text = std::mem::take(&mut pending) + &chunk.text;
            raw.push((format!("{name}#{n}"), parsed, Some(text)));
        }
        if let Some((_, _, Some(text))) = raw.last_mut() {
            text.push_str(&pending);
        }
    }
    for (source, value, doc_text) in raw {
        match value {
            Err(reason) => loaded.unreadable.push(Problem { source, reason }),
            Ok(Value::Null) => {}
            Ok(Value::Object(m))
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.get("items").is_some() =>
            {
                match m.get("items") {
                    Some(Value::Array(items)) => {
                        for (j, item) in items.iter().enumerate() {
                            loaded.documents.push(Document {
                                source: format!("{source}.items[{j}]"),
                                object: item.clone(),
                                text: None,
                            });
                        }
                    }
                    _ => loaded.unreadable.push(Problem {
                        source,
                        reason: "a List whose items is not a list".into(),
                    }),
                }
            }
            Ok(object @ Value::Object(_)) => loaded.documents.push(Document {
                source,
                object,
                text: doc_text,
            }),
            Ok(_) => loaded.unreadable.push(Problem {
                source,
                reason: "not a Kubernetes object (a mapping with kind)".into(),
            }),
        }
    }
}

/// Reads every path; what cannot be read is reported, never fatal.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => parse_text("-", &text, &mut loaded),
                Err(e) => loaded.unreadable.push(Problem {
                    source: "-".into(),
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        for file in files_of(path, &mut loaded) {
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Err(e) => loaded.unreadable.push(Problem {
                    source: name,
                    reason: e.to_string(),
                }),
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => parse_text(&name, &text, &mut loaded),
                    Err(_) => loaded.unreadable.push(Problem {
                        source: name,
                        reason: "not UTF-8 text".into(),
                    }),
                },
            }
        }
    }
    loaded
}

/// `(kind, namespace, name)`, each empty when missing: how kubectl and
/// kustomize tell objects apart.
pub fn object_id(o: &Value) -> (String, String, String) {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

/// Objects as multi-document YAML.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        yaml::document(o, &mut out);
    }
    out
}

/// Objects as one JSON `List`, which kubectl applies as its items.
pub fn to_json(objects: &[Value]) -> String {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let mut text = serde_json::to_string_pretty(&list).expect("JSON serializes");
    text.push('\n');
    text
}

/// A YAML writer for JSON values whose every string reads back as the same
/// string in YAML 1.1 (kubectl, through sigs.k8s.io/yaml) and YAML 1.2:
/// a string another type could be taken for (`no`, `on`, `1_000`, `0x1F`,
/// `~`, `1001:0`, ...) is double-quoted. Block style, as kubectl prints.
pub mod yaml {
    use serde_json::Value;

    /// Words a YAML 1.1 or 1.2 reader takes for booleans or null.
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "<<",
        "=",
    ];

    /// Can `s` be written plain and read back as this very string?
    pub fn plain(s: &str) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        let second = s.chars().nth(1);
        // A leading `-` is a sequence entry only before a space; `---` and
        // `...` mark documents.
        let indicator = if first == '-' {
            second.is_none_or(|c| c == ' ' || c == '\t') || s.starts_with("---")
        } else {
            "?:,[]{}#&*!|>'\"%@` \t".contains(first)
        };
        !numeric(s)
            && !WORDS.contains(&s)
            && !indicator
            && !s.starts_with("...")
            && !s.ends_with([' ', ':'])
            && !s.contains(": ")
            && !s.contains(" #")
            && !s.chars().any(escaped)
    }

    /// Characters written only as an escape: those YAML does not allow raw
    /// (C0 and C1 controls, DEL, U+FFFE, U+FFFF), the byte order mark, and
    /// the line breaks YAML 1.1 adds to `\n` and `\r` (NEL, U+2028,
    /// U+2029), which kubectl's reader would fold into a space or break the
    /// line at, even inside double quotes.
    fn escaped(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            )
    }

    /// `s` double-quoted, every character [`escaped`] as `\uXXXX` or its
    /// short form (which JSON and YAML share).
    fn quoted(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if escaped(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// Would a YAML 1.1 or 1.2 reader, or Go's (which strips `_` and
    /// tries every base and `inf`/`nan`), take `s` for a number, a
    /// sexagesimal or a date?
    fn numeric(s: &str) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        if !("+-.".contains(first) || first.is_ascii_digit()) {
            return false;
        }
        let t = s.replace('_', "");
        let body = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
        let digits = |d: &str, radix: u32| !d.is_empty() && d.chars().all(|c| c.is_digit(radix));
        let prefixed = [("0x", 16), ("0o", 8), ("0b", 2)]
            .iter()
            .any(|(p, radix)| body.strip_prefix(p).is_some_and(|d| digits(d, *radix)));
        let float = t.parse::<f64>().is_ok() || matches!(body.as_str(), ".inf" | ".nan");
        // 1001:0, 12:30:00, 190:20:30.15 (YAML 1.1 base 60).
        let mut parts = body.split(':');
        let sexagesimal = parts.next().is_some_and(|h| digits(h, 10))
            && body.contains(':')
            && parts.all(|p| {
                let (whole, frac) = p.split_once('.').unwrap_or((p, "0"));
                digits(whole, 10) && whole.len() <= 2 && digits(frac, 10)
            });
        let date = s.len() >= 8
            && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && s.as_bytes()[4] == b'-';
        prefixed || digits(&body, 10) || float || sexagesimal || date
    }

    fn scalar(s: &str, out: &mut String) {
        if plain(s) {
            out.push_str(s);
        } else {
            quoted(s, out);
        }
    }

    /// A string written as a literal block: several lines, nothing a block
    /// cannot carry exactly.
    fn literal(s: &str) -> bool {
        s.contains('\n')
            && !s.starts_with([' ', '\n'])
            && !s.chars().any(|c| c != '\n' && escaped(c))
            && s.lines().all(|l| !l.ends_with([' ', '\t']))
    }

    fn pad(indent: usize, out: &mut String) {
        out.extend(std::iter::repeat_n(' ', indent));
    }

    /// A value after `key:` or `- `: inline scalars, block collections.
    fn value(v: &Value, indent: usize, out: &mut String) {
        match v {
            Value::Null => out.push_str(" null\n"),
            Value::Bool(b) => out.push_str(if *b { " true\n" } else { " false\n" }),
            Value::Number(n) => {
                out.push(' ');
                out.push_str(&n.to_string());
                out.push('\n');
            }
            Value::String(s) if literal(s) => {
                let body = s.trim_end_matches('\n');
                let trailing = s.len() - body.len();
                out.push_str(match trailing {
                    0 => " |-\n",
                    1 => " |\n",
                    _ => " |+\n",
                });
                for line in s.split_inclusive('\n') {
                    if line != "\n" {
                        pad(indent + 2, out);
                    }
                    out.push_str(line);
                }
                if trailing == 0 {
                    out.push('\n');
                }
            }
            Value::String(s) => {
                out.push(' ');
                scalar(s, out);
                out.push('\n');
            }
            Value::Array(items) if items.is_empty() => out.push_str(" []\n"),
            Value::Object(map) if map.is_empty() => out.push_str(" {}\n"),
            Value::Array(items) => {
                out.push('\n');
                sequence(items, indent, out);
            }
            Value::Object(map) => {
                out.push('\n');
                mapping(map, indent + 2, false, out);
            }
        }
    }

    fn mapping(
        map: &serde_json::Map<String, Value>,
        indent: usize,
        first_inline: bool,
        out: &mut String,
    ) {
        for (i, (k, v)) in map.iter().enumerate() {
            if !(first_inline && i == 0) {
                pad(indent, out);
            }
            scalar(k, out);
            out.push(':');
            value(v, indent, out);
        }
    }

    /// Items at the indent of their key, as kubectl writes them.
    fn sequence(items: &[Value], indent: usize, out: &mut String) {
        for item in items {
            pad(indent, out);
            out.push('-');
            match item {
                Value::Object(map) if !map.is_empty() => {
                    out.push(' ');
                    mapping(map, indent + 2, true, out);
                }
                Value::Array(inner) if !inner.is_empty() => {
                    out.push('\n');
                    sequence(inner, indent + 2, out);
                }
                other => value(other, indent, out),
            }
        }
    }

    /// One document: a top-level mapping (or any value).
    pub fn document(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) if !map.is_empty() => mapping(map, 0, false, out),
            Value::Array(items) if !items.is_empty() => sequence(items, 0, out),
            other => {
                let mut s = String::new();
                value(other, 0, &mut s);
                out.push_str(s.trim_start_matches(' '));
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn strings_another_type_could_be_taken_for_are_quoted() {
            for s in [
                "no",
                "No",
                "on",
                "OFF",
                "y",
                "N",
                "~",
                "null",
                "1_000",
                "0x1F",
                "0o17",
                "017",
                "1e3",
                "1.5",
                ".5",
                "-1",
                "+1",
                ".inf",
                "-.Inf",
                ".NaN",
                "1001:0",
                "12:30:00",
                "2026-12-02",
                "<<",
                "=",
                "",
                " lead",
                "trail ",
                "a: b",
                "a #c",
                "- x",
                "[x]",
                "{x}",
                "*ref",
                "&anchor",
                "!tag",
                "%x",
                "@x",
                "`x",
                "'x",
                "\"x",
                "x:",
                "tab\tin",
                "\u{feff}bom",
                "line\u{2028}separator",
                "paragraph\u{2029}separator",
                "next\u{85}line",
                "del\u{7f}",
                "not\u{fffe}a character",
            ] {
                assert!(!plain(s), "{s:?} must be quoted");
            }
            for s in [
                "postgres",
                "--appendonly",
                "/var/lib/mysql",
                "10Gi",
                "ReadWriteOnce",
                "a-b.c_d",
                "key=value",
                "x:y",
                "http://x",
                "docker.io/library/busybox:1.37",
                "Deployment",
                "apps/v1",
            ] {
                assert!(plain(s), "{s:?} can stay plain");
            }
        }

        #[test]
        fn documents_read_back_as_written() {
            let v = json!({
                "kind": "ConfigMap",
                "data": {"DEBUG": "no", "N": "1_000", "script": "set -e\necho hi\n", "raw": "a\nb",
                    "many": "x\n\n\n", "lead": " x\ny", "ls": "a\u{2028}b\n", "nel": "a\u{85}b",
                    "del": "\u{7f}\u{fffe}\u{feff}", "quote": "\"\\\t\r"},
                "spec": {"args": ["--appendonly", "no", 1, true, null, [], {}, [["a"]]],
                    "list": [{"name": "a", "x": {"y": 1}}, {}], "empty": {}, "none": []},
            });
            let mut out = String::new();
            document(&v, &mut out);
            let back: Value = serde_yaml_ng::from_str(&out).unwrap();
            assert_eq!(back, v, "{out}");
            assert!(out.contains("DEBUG: \"no\""), "{out}");
            assert!(out.contains(r#"ls: "a\u2028b\n""#), "{out}");
            assert!(out.contains(r#"nel: "a\u0085b""#), "{out}");
            assert!(
                out.contains("script: |\n    set -e\n    echo hi\n"),
                "{out}"
            );
        }
    }
}
