//! A kustomize renderer for exactly what pvc-guard's own kustomizations
//! use, so that `pvc-guard install` prints what `kubectl kustomize` prints
//! without kubectl: `resources` (files and directories), `components`,
//! `patches` (strategic merge of maps and of the lists whose merge key it
//! knows, or JSON 6902, with a target by group, version, kind, name and
//! namespace), `labels` without selectors or templates, `images`, and
//! `configMapGenerator` / `secretGenerator` without name hashes.
//!
//! Every other field, and every option of these it does not implement, is
//! an error naming the file and the field: a later change to manifests/
//! that this renderer would get wrong fails loudly (tests/install.rs
//! renders every variant and compares it with `kubectl kustomize`) instead
//! of installing something else than the overlays describe.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::manifest::object_id;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KustomizeError {
    #[error(
        "{file}: `{field}` is a kustomize feature pvc-guard's renderer does not implement; render with kubectl kustomize instead, or teach src/install/kustomize.rs"
    )]
    Unsupported { file: String, field: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{0}: no such file or kustomization")]
    Missing(String),
}

type Result<T> = std::result::Result<T, KustomizeError>;

fn invalid(file: &str, message: impl Into<String>) -> KustomizeError {
    KustomizeError::Invalid {
        file: file.to_string(),
        message: message.into(),
    }
}

fn unsupported(file: &str, field: impl Into<String>) -> KustomizeError {
    KustomizeError::Unsupported {
        file: file.to_string(),
        field: field.into(),
    }
}

/// Files by path relative to a root (`/` separators, no `.` or `..`).
#[derive(Debug, Clone, Default)]
pub struct Files {
    files: BTreeMap<String, String>,
}

impl Files {
    pub fn new() -> Files {
        Files::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.files.insert(path.into(), text.into());
    }

    fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.files.keys().any(|k| k.starts_with(&prefix))
    }
}

/// `rel` resolved against directory `dir`; `None` when it leaves the root
/// or is absolute.
fn join(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// A plain scalar `0440`, which YAML 1.1 (and so kustomize, through
/// go-yaml, and kubectl) reads as octal, is a string to a YAML 1.2 reader
/// such as serde_yaml_ng: written back it would be a string where the API
/// wants a number (`defaultMode`). Rewritten as its decimal value before
/// parsing, everywhere but inside block scalars, whose text is data.
fn octal_as_decimal(text: &str) -> String {
    use std::sync::OnceLock;
    static VALUE: OnceLock<regex::Regex> = OnceLock::new();
    static BLOCK: OnceLock<regex::Regex> = OnceLock::new();
    let value = VALUE.get_or_init(|| {
        regex::Regex::new(r"^(\s*(?:- +)*(?:[A-Za-z0-9_./-]+: +|- +))([+-]?0[0-7]+)( *(?:#.*)?)$")
            .expect("a valid regex")
    });
    let block = BLOCK.get_or_init(|| {
        regex::Regex::new(
            r#"^\s*(?:- +)*(?:(?:[^#'"]*|"[^"]*"|'[^']*'): +)?[|>][0-9+-]* *(?:#.*)?$"#,
        )
        .expect("a valid regex")
    });
    let mut out = String::with_capacity(text.len());
    // The column of the key whose block scalar the lines belong to.
    let mut block_parent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if body.trim().is_empty() || indent > parent {
                out.push_str(line);
                continue;
            }
            block_parent = None;
        }
        if block.is_match(body) {
            let after_dashes = body.trim_start_matches([' ', '-']);
            block_parent = Some(body.len() - after_dashes.len());
            out.push_str(line);
            continue;
        }
        match value.captures(body) {
            Some(c) => {
                let number = &c[2];
                let (sign, digits) = match number.strip_prefix(['-', '+']) {
                    Some(rest) => (&number[..1], rest),
                    None => ("", number),
                };
                match i64::from_str_radix(digits, 8) {
                    Ok(n) => {
                        let sign = if sign == "-" { "-" } else { "" };
                        out.push_str(&format!("{}{sign}{n}{}", &c[1], &c[3]));
                        out.push_str(&line[body.len()..]);
                    }
                    Err(_) => out.push_str(line),
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The documents of a YAML file, empty ones left out.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Value>> {
    let text = octal_as_decimal(text);
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| invalid(file, e.to_string()))?;
        match v {
            Value::Null => {}
            Value::Object(_) => docs.push(v),
            _ => return Err(invalid(file, "a document is not an object")),
        }
    }
    Ok(docs)
}

fn object<'a>(file: &str, v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(file, format!("{what} is not a map")))
}

fn list<'a>(file: &str, v: Option<&'a Value>, what: &str) -> Result<&'a [Value]> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(file, format!("{what} is not a list"))),
    }
}

fn string<'a>(file: &str, v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| invalid(file, format!("{what} is not a string")))
}

/// Fails on a key of `map` outside `known`, naming it as `at.key`.
fn only(file: &str, map: &Map<String, Value>, at: &str, known: &[&str]) -> Result<()> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) if at.is_empty() => Err(unsupported(file, k.as_str())),
        Some(k) => Err(unsupported(file, format!("{at}.{k}"))),
        None => Ok(()),
    }
}

/// Renders the kustomization in directory `dir` of `files`.
pub fn build(files: &Files, dir: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    Renderer { files }.accumulate(dir, false, &mut out)?;
    Ok(out)
}

struct Renderer<'a> {
    files: &'a Files,
}

impl Renderer<'_> {
    /// Adds what the kustomization (or, `component`, the Component) in
    /// `dir` renders to `acc`. A Component works on the resources of the
    /// kustomization that includes it; a Kustomization only on its own.
    fn accumulate(&self, dir: &str, component: bool, acc: &mut Vec<Value>) -> Result<()> {
        let file =
            join(dir, "kustomization.yaml").ok_or_else(|| KustomizeError::Missing(dir.into()))?;
        for other in ["kustomization.yml", "Kustomization"] {
            if let Some(path) = join(dir, other)
                && self.files.get(&path).is_some()
            {
                return Err(unsupported(
                    &path,
                    "a kustomization file named other than kustomization.yaml",
                ));
            }
        }
        let text = self
            .files
            .get(&file)
            .ok_or_else(|| KustomizeError::Missing(file.clone()))?;
        let docs = parse_documents(&file, text)?;
        if docs.len() != 1 {
            return Err(invalid(&file, "a kustomization is one document"));
        }
        let k = object(&file, &docs[0], "the kustomization")?;
        let (want_api, want_kind) = if component {
            ("kustomize.config.k8s.io/v1alpha1", "Component")
        } else {
            ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        };
        let kind = k
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Kustomization");
        if kind != want_kind {
            return Err(invalid(
                &file,
                format!("is a {kind}, included where a {want_kind} belongs"),
            ));
        }
        if let Some(api) = k.get("apiVersion").and_then(Value::as_str)
            && api != want_api
        {
            return Err(invalid(
                &file,
                format!("apiVersion {api}: expected {want_api}"),
            ));
        }
        only(
            &file,
            k,
            "",
            &[
                "apiVersion",
                "kind",
                "resources",
                "components",
                "patches",
                "labels",
                "images",
                "configMapGenerator",
                "secretGenerator",
            ],
        )?;
        let mut own = if component {
            std::mem::take(acc)
        } else {
            Vec::new()
        };
        for r in list(&file, k.get("resources"), "resources")? {
            let r = string(&file, r, "a resource")?;
            self.resource(&file, dir, r, &mut own)?;
        }
        for c in list(&file, k.get("components"), "components")? {
            let c = string(&file, c, "a component")?;
            let path = self.local(&file, dir, c)?;
            if !self.files.is_dir(&path) {
                return Err(KustomizeError::Missing(path));
            }
            self.accumulate(&path, true, &mut own)?;
        }
        for (field, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            for g in list(&file, k.get(field), field)? {
                let generated = self.generate(&file, dir, field, kind, g)?;
                add(&file, &mut own, generated)?;
            }
        }
        for p in list(&file, k.get("patches"), "patches")? {
            self.patch(&file, dir, p, &mut own)?;
        }
        for l in list(&file, k.get("labels"), "labels")? {
            labels(&file, l, &mut own)?;
        }
        for i in list(&file, k.get("images"), "images")? {
            images(&file, i, &mut own)?;
        }
        if component {
            *acc = own;
        } else {
            for r in own {
                add(&file, acc, r)?;
            }
        }
        Ok(())
    }

    /// `rel` against `dir`, refused when it is a URL or leaves the root.
    fn local(&self, file: &str, dir: &str, rel: &str) -> Result<String> {
        if rel.contains("://") || rel.starts_with("github.com/") || rel.starts_with("git@") {
            return Err(unsupported(file, format!("a remote resource ({rel})")));
        }
        join(dir, rel).ok_or_else(|| invalid(file, format!("{rel} is outside the manifests")))
    }

    fn resource(&self, file: &str, dir: &str, rel: &str, acc: &mut Vec<Value>) -> Result<()> {
        let path = self.local(file, dir, rel)?;
        if let Some(text) = self.files.get(&path) {
            for doc in parse_documents(&path, text)? {
                if doc.get("kind").and_then(Value::as_str) == Some("List") {
                    return Err(unsupported(&path, "a List resource"));
                }
                add(&path, acc, doc)?;
            }
            Ok(())
        } else if self.files.is_dir(&path) {
            self.accumulate(&path, false, acc)
        } else {
            Err(KustomizeError::Missing(path))
        }
    }

    /// A ConfigMap or Secret from `configMapGenerator` / `secretGenerator`.
    fn generate(&self, file: &str, dir: &str, field: &str, kind: &str, g: &Value) -> Result<Value> {
        let g = object(file, g, field)?;
        let mut known = vec![
            "name",
            "namespace",
            "files",
            "literals",
            "options",
            "behavior",
        ];
        if kind == "Secret" {
            known.push("type");
        }
        only(file, g, field, &known)?;
        let name = string(
            file,
            g.get("name").unwrap_or(&Value::Null),
            "a generator's name",
        )?;
        if let Some(b) = g.get("behavior")
            && b != "create"
        {
            return Err(unsupported(file, format!("{field}.behavior: {b}")));
        }
        let options = match g.get("options") {
            Some(o) => object(file, o, "options")?.clone(),
            None => Map::new(),
        };
        only(
            file,
            &options,
            &format!("{field}.options"),
            &["disableNameSuffixHash", "labels", "annotations"],
        )?;
        // A name hash would need kustomize's hashing and name references.
        if options.get("disableNameSuffixHash") != Some(&Value::Bool(true)) {
            return Err(unsupported(
                file,
                format!("{field}.options.disableNameSuffixHash other than true"),
            ));
        }
        let mut data = Map::new();
        for f in list(file, g.get("files"), "files")? {
            let f = string(file, f, "a generator's file")?;
            let (key, rel) = f.split_once('=').unwrap_or((base_name(f), f));
            let path = self.local(file, dir, rel)?;
            let text = self
                .files
                .get(&path)
                .ok_or_else(|| KustomizeError::Missing(path.clone()))?;
            data.insert(key.to_string(), Value::String(text.to_string()));
        }
        for l in list(file, g.get("literals"), "literals")? {
            let l = string(file, l, "a literal")?;
            let (key, value) = l
                .split_once('=')
                .ok_or_else(|| invalid(file, format!("literal {l} is not KEY=VALUE")))?;
            data.insert(key.to_string(), Value::String(value.to_string()));
        }
        if kind == "Secret" {
            let b64 = base64::engine::general_purpose::STANDARD;
            for v in data.values_mut() {
                *v = Value::String(b64.encode(v.as_str().unwrap_or("")));
            }
        }
        let mut metadata = json!({"name": name});
        if let Some(ns) = g.get("namespace") {
            metadata["namespace"] = ns.clone();
        }
        for key in ["labels", "annotations"] {
            if let Some(m) = options.get(key) {
                metadata[key] = m.clone();
            }
        }
        let mut generated =
            json!({"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data});
        if let Some(t) = g.get("type") {
            generated["type"] = t.clone();
        }
        Ok(generated)
    }

    fn patch(&self, file: &str, dir: &str, p: &Value, acc: &mut [Value]) -> Result<()> {
        let p = object(file, p, "a patch")?;
        only(file, p, "patches", &["path", "patch", "target"])?;
        let (source, text) = match (p.get("path"), p.get("patch")) {
            (Some(path), None) => {
                let path = self.local(file, dir, string(file, path, "a patch's path")?)?;
                let text = self
                    .files
                    .get(&path)
                    .ok_or_else(|| KustomizeError::Missing(path.clone()))?;
                (path, text.to_string())
            }
            (None, Some(text)) => (file.to_string(), string(file, text, "a patch")?.to_string()),
            _ => return Err(invalid(file, "a patch has either path or patch")),
        };
        let target = match p.get("target") {
            Some(t) => Some(Target::read(file, t)?),
            None => None,
        };
        let text = octal_as_decimal(&text);
        // A sequence is a JSON 6902 patch; anything else strategic merge
        // patches, one a document.
        let parsed: Value = serde_yaml_ng::from_str(&text).unwrap_or(Value::Null);
        if parsed.is_array() {
            let target =
                target.ok_or_else(|| invalid(&source, "a JSON 6902 patch needs a target"))?;
            let ops: json_patch::Patch = serde_json::from_value(parsed)
                .map_err(|e| invalid(&source, format!("not a JSON patch: {e}")))?;
            for r in acc.iter_mut().filter(|r| target.matches(r)) {
                json_patch::patch(r, &ops).map_err(|e| invalid(&source, e.to_string()))?;
            }
            return Ok(());
        }
        for doc in parse_documents(&source, &text)? {
            let target = match &target {
                Some(t) => t.clone(),
                None => Target::of(&doc),
            };
            let mut matched = false;
            for r in acc.iter_mut().filter(|r| target.matches(r)) {
                merge(&source, "", r, &doc)?;
                matched = true;
            }
            if !matched && p.get("target").is_none() {
                return Err(invalid(
                    &source,
                    format!("the patch of {:?} matches no resource", object_id(&doc)),
                ));
            }
        }
        Ok(())
    }
}

/// Adds `r`, refusing a second resource with the same id, as kustomize does.
fn add(file: &str, acc: &mut Vec<Value>, r: Value) -> Result<()> {
    let rid = object_id(&r);
    if acc.iter().any(|o| object_id(o) == rid) {
        return Err(invalid(file, format!("{rid:?} is defined twice")));
    }
    acc.push(r);
    Ok(())
}

#[derive(Debug, Clone, Default)]
struct Target {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
}

impl Target {
    fn read(file: &str, t: &Value) -> Result<Target> {
        let t = object(file, t, "a patch target")?;
        only(
            file,
            t,
            "patches.target",
            &["group", "version", "kind", "name", "namespace"],
        )?;
        let field = |key: &str| -> Result<Option<String>> {
            t.get(key)
                .map(|v| string(file, v, key).map(str::to_string))
                .transpose()
        };
        // kustomize matches a target's name and namespace as anchored regexes.
        let pattern = |key: &str| -> Result<Option<regex::Regex>> {
            field(key)?
                .map(|p| {
                    regex::Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| invalid(file, format!("target {key}: {e}")))
                })
                .transpose()
        };
        Ok(Target {
            group: field("group")?,
            version: field("version")?,
            kind: field("kind")?,
            name: pattern("name")?,
            namespace: pattern("namespace")?,
        })
    }

    /// The resource a strategic merge patch without a target names.
    fn of(doc: &Value) -> Target {
        let (kind, namespace, name) = object_id(doc);
        let (group, version) = group_version(doc);
        let exact = |s: &str| regex::Regex::new(&format!("^{}$", regex::escape(s))).ok();
        Target {
            group: Some(group),
            version: Some(version),
            kind: Some(kind),
            name: exact(&name),
            namespace: (!namespace.is_empty()).then(|| exact(&namespace)).flatten(),
        }
    }

    fn matches(&self, r: &Value) -> bool {
        let (kind, namespace, name) = object_id(r);
        let (group, version) = group_version(r);
        self.group.as_ref().is_none_or(|g| *g == group)
            && self.version.as_ref().is_none_or(|v| *v == version)
            && self.kind.as_ref().is_none_or(|k| *k == kind)
            && self.name.as_ref().is_none_or(|n| n.is_match(&name))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| n.is_match(&namespace))
    }
}

fn group_version(r: &Value) -> (String, String) {
    let api = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    match api.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api.to_string()),
    }
}

/// The lists a strategic merge patch may touch, by field name, with the
/// key their items merge on (the Kubernetes API's patchMergeKey).
const MERGE_KEYS: &[(&str, &str)] = &[("webhooks", "name")];

/// Strategic merge of `patch` into `target`: maps merge, `null` removes,
/// scalars replace, and a list merges item by item on its merge key when
/// [`MERGE_KEYS`] knows it; any other list, and `$patch` directives, are
/// not implemented.
fn merge(file: &str, at: &str, target: &mut Value, patch: &Value) -> Result<()> {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        if key.starts_with('$') {
            return Err(unsupported(
                file,
                format!("the strategic merge directive {path}"),
            ));
        }
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(_) => merge(
                file,
                &path,
                map.entry(key.clone()).or_insert(Value::Null),
                value,
            )?,
            Value::Array(items) => {
                let Some((_, merge_key)) = MERGE_KEYS.iter().find(|(f, _)| f == key) else {
                    return Err(unsupported(
                        file,
                        format!("a strategic merge patch of the list {path}"),
                    ));
                };
                let existing = map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Some(existing) = existing.as_array_mut() else {
                    return Err(invalid(file, format!("{path} is not a list")));
                };
                for item in items {
                    let Some(k) = item.get(*merge_key) else {
                        return Err(invalid(
                            file,
                            format!("an item of {path} has no {merge_key}"),
                        ));
                    };
                    match existing.iter_mut().find(|e| e.get(*merge_key) == Some(k)) {
                        Some(e) => merge(file, &path, e, item)?,
                        None => existing.push(item.clone()),
                    }
                }
            }
            _ => {
                map.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// `labels`: the pairs on every resource's metadata.labels.
fn labels(file: &str, l: &Value, acc: &mut [Value]) -> Result<()> {
    let l = object(file, l, "a labels entry")?;
    only(
        file,
        l,
        "labels",
        &["pairs", "includeSelectors", "includeTemplates"],
    )?;
    for flag in ["includeSelectors", "includeTemplates"] {
        match l.get(flag) {
            None | Some(Value::Bool(false)) => {}
            Some(_) => return Err(unsupported(file, format!("labels.{flag} other than false"))),
        }
    }
    let pairs = match l.get("pairs") {
        Some(p) => object(file, p, "labels.pairs")?.clone(),
        None => Map::new(),
    };
    for r in acc.iter_mut() {
        let metadata = r
            .as_object_mut()
            .expect("resources are objects")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let Some(metadata) = metadata.as_object_mut() else {
            return Err(invalid(file, "a resource's metadata is not a map"));
        };
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if labels.is_null() {
            *labels = json!({});
        }
        let Some(labels) = labels.as_object_mut() else {
            return Err(invalid(file, "a resource's labels are not a map"));
        };
        for (k, v) in &pairs {
            labels.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// An image reference split into name, tag and digest.
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..]), digest),
        _ => (rest, None, digest),
    }
}

/// `images`: a new name, tag or digest for every container image of `name`.
fn images(file: &str, i: &Value, acc: &mut [Value]) -> Result<()> {
    let i = object(file, i, "an images entry")?;
    only(file, i, "images", &["name", "newName", "newTag", "digest"])?;
    let name = string(file, i.get("name").unwrap_or(&Value::Null), "images.name")?.to_string();
    let text = |key: &str| -> Result<Option<String>> {
        i.get(key)
            .map(|v| string(file, v, key).map(str::to_string))
            .transpose()
    };
    let (new_name, new_tag, digest) = (text("newName")?, text("newTag")?, text("digest")?);
    let rewrite = |image: &str| -> Option<String> {
        let (n, tag, dig) = split_image(image);
        if n != name {
            return None;
        }
        let mut out = new_name.clone().unwrap_or_else(|| n.to_string());
        if let Some(d) = &digest {
            out.push('@');
            out.push_str(d);
        } else if let Some(t) = &new_tag {
            out.push(':');
            out.push_str(t);
        } else if let Some(t) = tag {
            out.push(':');
            out.push_str(t);
            if let Some(d) = dig {
                out.push('@');
                out.push_str(d);
            }
        } else if let Some(d) = dig {
            out.push('@');
            out.push_str(d);
        }
        Some(out)
    };
    for r in acc.iter_mut() {
        for_each_container_image(r, &mut |image| {
            if let Some(new) = rewrite(image) {
                *image = new;
            }
        });
    }
    Ok(())
}

/// Calls `f` on the image of every container, init container and
/// ephemeral container anywhere in `v`, as kustomize's image transformer
/// finds them.
pub fn for_each_container_image(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if matches!(
                    key.as_str(),
                    "containers" | "initContainers" | "ephemeralContainers"
                ) && let Value::Array(items) = value
                {
                    for c in items.iter_mut() {
                        if let Some(Value::String(image)) = c.get_mut("image") {
                            f(image);
                        }
                    }
                }
                for_each_container_image(value, f);
            }
        }
        Value::Array(items) => {
            for item in items {
                for_each_container_image(item, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> Files {
        let mut f = Files::new();
        for (p, t) in entries {
            f.insert(*p, *t);
        }
        f
    }

    #[test]
    fn octal_plain_scalars_become_numbers_but_block_text_stays() {
        let text = "a:\n  defaultMode: 0440\n  mode: 0644 # rw\n  quoted: \"0440\"\n  list:\n  - 010\n  n: 10\ndata:\n  config.yaml: |\n    size: 0440\n  other: 0700\n";
        let docs = parse_documents("t.yaml", text).unwrap();
        let v = &docs[0];
        assert_eq!(v["a"]["defaultMode"], 288);
        assert_eq!(v["a"]["mode"], 420);
        assert_eq!(v["a"]["quoted"], "0440");
        assert_eq!(v["a"]["list"][0], 8);
        assert_eq!(v["a"]["n"], 10);
        assert_eq!(v["data"]["config.yaml"], "size: 0440\n");
        assert_eq!(v["data"]["other"], 448);
    }

    #[test]
    fn unknown_fields_are_errors_naming_file_and_field() {
        let f = files(&[(
            "k/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n",
        )]);
        assert_eq!(
            build(&f, "k").unwrap_err(),
            KustomizeError::Unsupported {
                file: "k/kustomization.yaml".into(),
                field: "namePrefix".into()
            }
        );
        for (body, field) in [
            (
                "labels:\n- pairs: {a: b}\n  includeSelectors: true\n",
                "labels.includeSelectors other than false",
            ),
            ("images:\n- name: x\n  newTagg: y\n", "images.newTagg"),
            (
                "patches:\n- path: p.yaml\n  options: {allowNameChange: true}\n",
                "patches.options",
            ),
            (
                "patches:\n- patch: '{}'\n  target: {labelSelector: a=b}\n",
                "patches.target.labelSelector",
            ),
            (
                "configMapGenerator:\n- name: c\n  literals: [a=b]\n",
                "configMapGenerator.options.disableNameSuffixHash other than true",
            ),
            (
                "resources:\n- https://example.com/x.yaml\n",
                "a remote resource (https://example.com/x.yaml)",
            ),
        ] {
            let f = files(&[("k/kustomization.yaml", body)]);
            match build(&f, "k") {
                Err(KustomizeError::Unsupported { field: got, .. }) => {
                    assert_eq!(got, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn resources_components_patches_labels_images_and_generators() {
        let f = files(&[
            (
                "base/kustomization.yaml",
                "resources:\n- d.yaml\nlabels:\n- pairs: {part-of: x}\n  includeSelectors: false\nimages:\n- name: reg/app\n  newTag: v2\n",
            ),
            (
                "base/d.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app, namespace: ns}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: a, image: 'reg/app:v1'}\n      - {name: b, image: 'reg/other:v1'}\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: hook}\nwebhooks:\n- name: one\n  clientConfig: {service: {name: s}}\n",
            ),
            (
                "comp/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nconfigMapGenerator:\n- name: dash\n  namespace: ns\n  files: [d.json]\n  options: {disableNameSuffixHash: true, labels: {x: \"1\"}}\n",
            ),
            ("comp/d.json", "{\"a\": 1}\n"),
            (
                "top/kustomization.yaml",
                "resources:\n- ../base\ncomponents:\n- ../comp\npatches:\n- target: {kind: ValidatingWebhookConfiguration, name: hook}\n  patch: |-\n    kind: ValidatingWebhookConfiguration\n    metadata:\n      name: hook\n      annotations: {a: b}\n    webhooks:\n    - name: one\n      clientConfig: {caBundle: Q0E=}\n- target: {kind: Deployment}\n  patch: |-\n    - op: replace\n      path: /metadata/name\n      value: renamed\n",
            ),
        ]);
        let out = build(&f, "top").unwrap();
        assert_eq!(out.len(), 3);
        let d = &out[0];
        assert_eq!(d["metadata"]["name"], "renamed");
        assert_eq!(d["metadata"]["labels"]["part-of"], "x");
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "reg/app:v2");
        assert_eq!(containers[1]["image"], "reg/other:v1");
        let hook = &out[1];
        assert_eq!(hook["metadata"]["annotations"]["a"], "b");
        assert_eq!(hook["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=");
        assert_eq!(hook["webhooks"][0]["clientConfig"]["service"]["name"], "s");
        let cm = &out[2];
        assert_eq!(cm["kind"], "ConfigMap");
        assert_eq!(cm["data"]["d.json"], "{\"a\": 1}\n");
        assert_eq!(cm["metadata"]["labels"]["x"], "1");
        assert!(
            cm["metadata"]["labels"].get("part-of").is_none(),
            "base labels stay in the base"
        );
    }

    #[test]
    fn lists_without_a_known_merge_key_and_duplicates_are_refused() {
        let f = files(&[
            (
                "k/kustomization.yaml",
                "resources: [a.yaml]\npatches:\n- patch: |-\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a}\n    spec: {items: [1]}\n",
            ),
            (
                "k/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
        ]);
        assert!(matches!(
            build(&f, "k"),
            Err(KustomizeError::Unsupported { .. })
        ));
        let f = files(&[
            ("k/kustomization.yaml", "resources: [a.yaml, a.yaml]\n"),
            (
                "k/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
        ]);
        assert!(matches!(
            build(&f, "k"),
            Err(KustomizeError::Invalid { .. })
        ));
        let f = files(&[("k/kustomization.yaml", "resources: [../../x.yaml]\n")]);
        assert!(matches!(
            build(&f, "k"),
            Err(KustomizeError::Invalid { .. })
        ));
        assert!(matches!(
            build(&Files::new(), "k"),
            Err(KustomizeError::Missing(_))
        ));
    }

    #[test]
    fn images_split_like_references() {
        assert_eq!(
            split_image("reg:5000/a/b:1.0"),
            ("reg:5000/a/b", Some("1.0"), None)
        );
        assert_eq!(split_image("reg:5000/a/b"), ("reg:5000/a/b", None, None));
        assert_eq!(
            split_image("a/b@sha256:ab"),
            ("a/b", None, Some("sha256:ab"))
        );
        assert_eq!(
            split_image("a:1@sha256:ab"),
            ("a", Some("1"), Some("sha256:ab"))
        );
    }
}
