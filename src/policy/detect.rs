//! Finding database containers and their data paths (DESIGN.md, section 1).
//! Sources, in order of authority: the `pvc-guard.io/data-paths` annotation,
//! server flags and `PGDATA`, SQLite paths, the image catalog, server-only
//! environment variables, and mounts at distinctive database paths.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::catalog::{Catalog, ImageFacts, ImageRef, facts_for, parse_owner};
use super::workload::{Container, ContainerList, Workload, normalize_path};

pub const DATA_PATHS_ANNOTATION: &str = "pvc-guard.io/data-paths";
pub const DATA_OWNER_ANNOTATION: &str = "pvc-guard.io/data-owner";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Annotation,
    Flag,
    Pgdata,
    Sqlite,
    Catalog,
    ServerEnv,
    DistinctiveMount,
}

impl Source {
    /// Detected from what the container runs, not only declared by people.
    pub fn is_database(self) -> bool {
        !matches!(self, Source::Annotation)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    pub path: String,
    pub source: Source,
    /// A SQLite (or DuckDB) file rather than a directory.
    pub file: bool,
}

/// A path the detector could not place (a relative SQLite path with no
/// working directory, a family known only from client variables, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub path: String,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct DbContainer<'a, 'c> {
    pub container: Container<'a>,
    pub image: &'a str,
    /// Catalog facts for the image, or for the family its environment or
    /// mounts reveal.
    pub facts: Option<ImageFacts<'c>>,
    pub paths: Vec<DataPath>,
    pub unresolved: Vec<Unresolved>,
    /// Cache-like image not declared durable: ephemeral storage is a warning.
    pub cache_like: bool,
    /// `PGDATA` may come from `envFrom` or `valueFrom`: validated with the
    /// image default, never mutated.
    pub pgdata_hidden: bool,
    /// `PGDATA` as the postgres server will see it, when known.
    pub pgdata: Option<String>,
}

impl DbContainer<'_, '_> {
    pub fn family(&self) -> Option<&str> {
        self.facts.as_ref().map(|f| f.entry.family.as_str())
    }

    pub fn is_postgres(&self) -> bool {
        self.family() == Some("postgres")
    }
}

/// Image families known from variables only their server reads.
const SERVER_ENV: &[(&str, &str)] = &[
    ("MYSQL_ROOT_PASSWORD", "mysql"),
    ("MYSQL_ALLOW_EMPTY_PASSWORD", "mysql"),
    ("MYSQL_RANDOM_ROOT_PASSWORD", "mysql"),
    ("MARIADB_ROOT_PASSWORD", "mariadb"),
    ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "mariadb"),
    ("MONGO_INITDB_ROOT_USERNAME", "mongo"),
    ("POSTGRES_INITDB_ARGS", "postgres"),
    ("POSTGRES_HOST_AUTH_METHOD", "postgres"),
];

/// Variables clients set too: a hint, never enough on their own.
const CLIENT_ENV: &[(&str, &str)] = &[
    ("POSTGRES_PASSWORD", "postgres"),
    ("POSTGRES_USER", "postgres"),
    ("POSTGRES_DB", "postgres"),
    ("MYSQL_DATABASE", "mysql"),
];

/// How a server program names its data directory on the command line.
#[derive(Clone, Copy)]
enum Flag {
    /// `--name VALUE` or `--name=VALUE` (or `-D VALUE`, `-DVALUE` for short ones).
    Value(&'static str),
    /// `-c key=VALUE` (postgres settings).
    Setting(&'static str, &'static str),
    /// `-Ekey=VALUE` (elasticsearch).
    Prefixed(&'static str),
    /// Absolute paths among the arguments after a subcommand (`minio server DIR`).
    Positional(&'static str),
}

/// Server programs and their data-directory flags, scoped to the program.
const SERVER_FLAGS: &[(&str, &str, &[Flag])] = &[
    (
        "postgres",
        "postgres",
        &[Flag::Value("-D"), Flag::Setting("-c", "data_directory")],
    ),
    (
        "pg_ctl",
        "postgres",
        &[Flag::Value("-D"), Flag::Value("--pgdata")],
    ),
    ("mysqld", "mysql", &[Flag::Value("--datadir")]),
    ("mariadbd", "mysql", &[Flag::Value("--datadir")]),
    ("mongod", "mongo", &[Flag::Value("--dbpath")]),
    ("redis-server", "redis", &[Flag::Value("--dir")]),
    ("valkey-server", "redis", &[Flag::Value("--dir")]),
    ("etcd", "etcd", &[Flag::Value("--data-dir")]),
    (
        "cockroach",
        "cockroach",
        &[Flag::Value("--store"), Flag::Value("-s")],
    ),
    (
        "rethinkdb",
        "rethinkdb",
        &[Flag::Value("-d"), Flag::Value("--directory")],
    ),
    ("meilisearch", "meilisearch", &[Flag::Value("--db-path")]),
    (
        "prometheus",
        "prometheus",
        &[Flag::Value("--storage.tsdb.path")],
    ),
    (
        "elasticsearch",
        "elasticsearch",
        &[Flag::Prefixed("-Epath.data=")],
    ),
    ("minio", "minio", &[Flag::Positional("server")]),
];

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh"];
/// Programs that run the next word as the real program.
const WRAPPERS: &[&str] = &[
    "exec",
    "tini",
    "dumb-init",
    "--",
    "env",
    "nice",
    "docker-entrypoint.sh",
    "docker-entrypoint",
];
/// Wrappers whose first argument is a user name.
const USER_WRAPPERS: &[&str] = &["gosu", "su-exec"];

/// A word of a command line, and whether a program sits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub program: bool,
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Splits a shell script into words: quotes removed, `;`, `&&`, `|` and
/// newlines as a ";" separator. Enough to find programs and their flags.
fn shell_words(script: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut started = false;
    let mut quote: Option<char> = None;
    for ch in script.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => current.push(ch),
            None => match ch {
                '\'' | '"' => {
                    quote = Some(ch);
                    started = true;
                }
                c if c.is_whitespace() && c != '\n' => {
                    if started {
                        words.push(std::mem::take(&mut current));
                        started = false;
                    }
                }
                ';' | '|' | '&' | '\n' | '(' | ')' => {
                    if started {
                        words.push(std::mem::take(&mut current));
                        started = false;
                    }
                    if words.last().is_none_or(|w| w != ";") {
                        words.push(";".into());
                    }
                }
                c => {
                    current.push(c);
                    started = true;
                }
            },
        }
    }
    if started {
        words.push(current);
    }
    words
}

/// The container's command and args as words, marking program positions.
/// Shell scripts (`sh -c "..."`) are split into words of their own.
pub fn command_words(container: &Container<'_>) -> Vec<Word> {
    let mut raw: Vec<(String, bool)> = Vec::new(); // (word, is a script)
    let elements: Vec<&str> = container
        .strings("command")
        .into_iter()
        .chain(container.strings("args"))
        .collect();
    let mut shell_flags = false;
    for element in elements {
        let after_shell_c = shell_flags && !element.starts_with('-');
        if after_shell_c || element.contains('\n') {
            raw.push((";".into(), false));
            raw.extend(shell_words(element).into_iter().map(|w| (w, true)));
            raw.push((";".into(), false));
            shell_flags = false;
            continue;
        }
        if SHELLS.contains(&basename(element)) {
            shell_flags = true;
        } else if !(shell_flags && element.starts_with('-')) {
            shell_flags = false;
        }
        raw.push((element.to_string(), false));
    }
    let mut words = Vec::with_capacity(raw.len());
    let mut program_next = true;
    let mut skip_user = false;
    for (text, _) in raw {
        if text == ";" {
            program_next = true;
            words.push(Word {
                text,
                program: false,
            });
            continue;
        }
        if skip_user {
            skip_user = false;
            words.push(Word {
                text,
                program: false,
            });
            continue;
        }
        let program = program_next;
        if program {
            let base = basename(&text);
            program_next = WRAPPERS.contains(&base) || USER_WRAPPERS.contains(&base);
            skip_user = USER_WRAPPERS.contains(&base);
            if SHELLS.contains(&base) {
                program_next = false;
            }
        }
        words.push(Word { text, program });
    }
    words
}

/// Does a program position run one of the entry's server commands?
/// A server command may name a subcommand: `cockroach start`.
fn names_server(words: &[Word], server_commands: &[String]) -> bool {
    words.iter().enumerate().any(|(i, w)| {
        w.program
            && server_commands.iter().any(|cmd| {
                let mut parts = cmd.split_whitespace();
                let program = parts.next().unwrap_or("");
                let sub = parts.next();
                (w.text == program || basename(&w.text) == basename(program))
                    && sub.is_none_or(|s| words.get(i + 1).is_some_and(|n| n.text == s))
            })
    })
}

/// Data directories named by server flags, scoped to their program.
fn flag_paths(words: &[Word], implicit_program: Option<&str>) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut current: Option<&(&str, &str, &[Flag])> =
        implicit_program.and_then(|p| SERVER_FLAGS.iter().find(|(name, _, _)| *name == p));
    for (i, word) in words.iter().enumerate() {
        if word.text == ";" {
            current = None;
            continue;
        }
        // Args that start with a flag run the image's own server.
        if word.program && !word.text.starts_with('-') {
            current = SERVER_FLAGS
                .iter()
                .find(|(name, _, _)| *name == basename(&word.text));
            continue;
        }
        let Some((_, family, flags)) = current else {
            continue;
        };
        let next = words.get(i + 1).map(|w| w.text.as_str());
        for flag in flags.iter() {
            let value = match *flag {
                Flag::Value(name) => {
                    if word.text == name {
                        next.map(str::to_string)
                    } else if let Some(v) = word
                        .text
                        .strip_prefix(name)
                        .and_then(|r| r.strip_prefix('='))
                    {
                        Some(v.to_string())
                    } else if name.len() == 2 && !name.starts_with("--") && word.text.len() > 2 {
                        word.text
                            .strip_prefix(name)
                            .filter(|v| v.starts_with('/'))
                            .map(str::to_string)
                    } else {
                        None
                    }
                }
                Flag::Setting(flag, key) => (word.text == flag)
                    .then_some(next)
                    .flatten()
                    .and_then(|n| n.strip_prefix(key)?.strip_prefix('=').map(str::to_string)),
                Flag::Prefixed(prefix) => word.text.strip_prefix(prefix).map(str::to_string),
                Flag::Positional(sub) => {
                    let after_sub = words[..i]
                        .iter()
                        .rev()
                        .take_while(|w| !w.program && w.text != ";")
                        .any(|w| w.text == sub);
                    (after_sub && word.text.starts_with('/') && !word.text.contains('{'))
                        .then(|| word.text.clone())
                }
            };
            if let Some(value) = value {
                // `--store=path=/x,attrs=ssd` and `--store=/x`; in-memory stores are not paths.
                let value = value
                    .split(',')
                    .find_map(|part| {
                        part.strip_prefix("path=")
                            .or(Some(part).filter(|p| !p.contains('=')))
                    })
                    .unwrap_or("")
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string();
                if value.starts_with('/') {
                    out.push((normalize_path(&value), *family));
                }
            }
        }
    }
    out
}

static SQLITE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(jdbc:sqlite:|sqlite3?:///|sqlite3?:|file:|data source\s*=\s*)?([A-Za-z0-9_./~+@%-]*\.(?:sqlite3|sqlite|duckdb|db))(?:$|[\s"'?;,&)\]])"#,
    )
    .expect("valid regex")
});

/// SQLite (and DuckDB) file locations in one string: absolute paths, or
/// URIs whose path may be relative. Host names (`postgres.db`) are skipped.
pub fn sqlite_paths(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for cap in SQLITE.captures_iter(text) {
        let whole = cap.get(0).expect("match");
        let path = cap.get(2).expect("path group").as_str();
        let prefixed = cap.get(1).is_some();
        // `http://host/x.db` and friends: a scheme we do not know.
        if !prefixed && whole.start() > 0 && text[..whole.start()].ends_with(':') {
            continue;
        }
        if path.starts_with('/') {
            if path.starts_with("//") && !prefixed {
                continue;
            }
            out.push((normalize_path(path), true));
        } else if prefixed && !path.is_empty() && !path.starts_with('.')
            || prefixed && path.starts_with("./")
        {
            out.push((path.trim_start_matches("./").to_string(), false));
        }
    }
    out
}

fn env_value<'a>(container: &Container<'a>, name: &str) -> Option<&'a Value> {
    container
        .env()
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn has_env(container: &Container<'_>, name: &str) -> bool {
    env_value(container, name).is_some()
}

/// `--save ""` and `--appendonly no`: redis explicitly run as a cache.
fn explicit_cache(words: &[Word]) -> bool {
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| w.text == flag)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.text.as_str())
    };
    after("--save") == Some("") && after("--appendonly") == Some("no")
}

/// Paths the `pvc-guard.io/data-paths` annotation gives each container.
fn annotated_paths<'a>(
    workload: &Workload<'a>,
    containers: &[Container<'a>],
) -> Vec<(usize, String)> {
    let Some(value) = workload.annotation(DATA_PATHS_ANNOTATION) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let app: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.list == ContainerList::Containers)
        .map(|(i, _)| i)
        .collect();
    for item in value
        .split([';', ',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.split_once('=') {
            Some((name, path)) => {
                if let Some(i) = containers.iter().position(|c| c.name == name.trim()) {
                    out.push((i, normalize_path(path.trim())));
                }
            }
            None => {
                // Without a container name: the container that mounts it,
                // else the default container, else the first one.
                let path = normalize_path(item);
                let mounting: Vec<usize> = app
                    .iter()
                    .copied()
                    .filter(|&i| {
                        containers[i].mounts().iter().any(|m| {
                            m.get("mountPath")
                                .and_then(Value::as_str)
                                .is_some_and(|mp| super::workload::path_contains(mp, &path))
                        })
                    })
                    .collect();
                let default = workload
                    .annotation("kubectl.kubernetes.io/default-container")
                    .and_then(|n| containers.iter().position(|c| c.name == n));
                let targets = if app.len() == 1 {
                    app.clone()
                } else if !mounting.is_empty() {
                    mounting
                } else {
                    default.or(app.first().copied()).into_iter().collect()
                };
                out.extend(targets.into_iter().map(|i| (i, path.clone())));
            }
        }
    }
    out
}

/// The user a container starts as: its securityContext, the pod's, the
/// `pvc-guard.io/data-owner` annotation, then the catalog's image default.
pub fn start_user(workload: &Workload<'_>, db: &DbContainer<'_, '_>) -> Option<(i64, i64)> {
    let c = &db.container;
    let uid = c
        .security_context("runAsUser")
        .or_else(|| workload.pod_security_context("runAsUser"))
        .and_then(Value::as_i64);
    let gid = c
        .security_context("runAsGroup")
        .or_else(|| workload.pod_security_context("runAsGroup"))
        .and_then(Value::as_i64);
    if let Some(uid) = uid {
        return Some((uid, gid.unwrap_or(if uid == 0 { 0 } else { uid })));
    }
    if let Some(owner) = workload
        .annotation(DATA_OWNER_ANNOTATION)
        .and_then(parse_owner)
    {
        return Some(owner);
    }
    db.facts.as_ref().and_then(|f| f.user)
}

/// Every database container of a workload with its data paths.
pub fn detect<'a, 'c>(
    workload: &Workload<'a>,
    catalog: &'c Catalog,
    durable_images: &[String],
) -> Vec<DbContainer<'a, 'c>> {
    let containers = workload.containers();
    let annotated = annotated_paths(workload, &containers);
    let mut out = Vec::new();
    for (ci, container) in containers.iter().enumerate() {
        let mine: Vec<&String> = annotated
            .iter()
            .filter(|(i, _)| *i == ci)
            .map(|(_, p)| p)
            .collect();
        let ordinary_init = container.list == ContainerList::InitContainers && !container.sidecar;
        if ordinary_init && mine.is_empty() {
            continue;
        }
        let image = container.image().unwrap_or("");
        let image_ref = ImageRef::parse(image);
        let words = command_words(container);
        let entry = (!image.is_empty())
            .then(|| catalog.lookup(&image_ref))
            .flatten();

        // Does a catalog image run its server, or a client?
        let runs_server = entry.is_some_and(|e| {
            if container.has_command() {
                return names_server(&words, &e.server_commands);
            }
            let args = container.strings("args");
            match args.first() {
                None => true,
                Some(first) if first.starts_with('-') => true,
                Some(_) => names_server(&words, &e.server_commands),
            }
        });
        let mut facts: Option<ImageFacts<'c>> = None;
        let mut from_catalog = false;
        if let (Some(e), true) = (entry, runs_server) {
            facts = Some(facts_for(e, &image_ref));
            from_catalog = true;
        }
        let mut unresolved = Vec::new();

        // Server-only variables name the family of an image built on it.
        let mut from_env = false;
        if entry.is_none()
            && let Some((_, family)) = SERVER_ENV.iter().find(|(var, _)| has_env(container, var))
            && let Some(e) = catalog
                .by_name(family)
                .or_else(|| catalog.by_family(family))
        {
            facts = Some(facts_for(
                e,
                &ImageRef {
                    repository: e.name.clone(),
                    tag: None,
                    digest: None,
                },
            ));
            from_env = true;
        }

        let implicit_program = match (
            &facts,
            container.has_command(),
            container.strings("args").first(),
        ) {
            (Some(f), false, _) if from_catalog => SERVER_FLAGS
                .iter()
                .find(|(_, fam, _)| *fam == f.entry.family)
                .map(|(p, _, _)| *p),
            _ => None,
        };
        let flagged = flag_paths(&words, implicit_program);

        let mut paths: Vec<DataPath> = Vec::new();
        let push = |paths: &mut Vec<DataPath>, path: String, source: Source, file: bool| {
            if !paths.iter().any(|p| p.path == path) {
                paths.push(DataPath { path, source, file });
            }
        };

        if !mine.is_empty() {
            for p in mine {
                push(&mut paths, p.clone(), Source::Annotation, false);
            }
        } else {
            for (path, family) in &flagged {
                push(&mut paths, path.clone(), Source::Flag, false);
                if facts.is_none()
                    && let Some(e) = catalog.by_family(family)
                {
                    facts = Some(facts_for(e, &image_ref));
                }
            }
        }

        // PGDATA: explicit wins; from valueFrom or envFrom it is unknown.
        let is_pg = facts.as_ref().is_some_and(|f| f.entry.family == "postgres");
        let mut pgdata_hidden = false;
        let mut pgdata = None;
        match env_value(container, "PGDATA") {
            Some(e) if e.get("value").and_then(Value::as_str).is_some() => {
                let v = e.get("value").and_then(Value::as_str).unwrap_or("");
                if v.starts_with('/') && (is_pg || entry.is_none()) {
                    let v = normalize_path(v);
                    pgdata = Some(v.clone());
                    if paths.iter().all(|p| p.source != Source::Annotation) {
                        push(&mut paths, v, Source::Pgdata, false);
                    }
                    if facts.is_none() {
                        facts = catalog
                            .by_family("postgres")
                            .map(|e| facts_for(e, &image_ref));
                    }
                }
            }
            Some(_) if is_pg => pgdata_hidden = true,
            None if is_pg && container.has_env_from() => pgdata_hidden = true,
            _ => {}
        }

        // SQLite and DuckDB files in env values, command and args.
        let env_texts = container
            .env()
            .iter()
            .filter_map(|e| e.get("value").and_then(Value::as_str));
        let cmd_texts = container
            .strings("command")
            .into_iter()
            .chain(container.strings("args"));
        if paths.iter().all(|p| p.source != Source::Annotation) {
            for text in env_texts.chain(cmd_texts) {
                for (path, absolute) in sqlite_paths(text) {
                    if absolute {
                        push(&mut paths, path, Source::Sqlite, true);
                    } else if let Some(wd) = container.working_dir() {
                        push(
                            &mut paths,
                            normalize_path(&format!("{wd}/{path}")),
                            Source::Sqlite,
                            true,
                        );
                    } else if !unresolved.iter().any(|u: &Unresolved| u.path == path) {
                        unresolved.push(Unresolved {
                            why: format!(
                                "the SQLite path {path:?} is relative and the container sets no workingDir, so where it lands depends on the image"
                            ),
                            path,
                        });
                    }
                }
            }
        }

        // The catalog's own data paths, unless flags or PGDATA moved them.
        let mut cache_like = false;
        let mut explicit_cache_form = false;
        if let Some(f) = &facts {
            if from_catalog || from_env {
                let moved = paths.iter().any(|p| {
                    matches!(p.source, Source::Flag | Source::Pgdata | Source::Annotation)
                });
                if !moved {
                    for p in &f.data_paths {
                        push(
                            &mut paths,
                            p.clone(),
                            if from_env {
                                Source::ServerEnv
                            } else {
                                Source::Catalog
                            },
                            false,
                        );
                    }
                }
                if f.version_assumed_from_digest && f.entry.family == "postgres" {
                    unresolved.push(Unresolved {
                        path: f.data_paths.first().cloned().unwrap_or_default(),
                        why: format!(
                            "the image {image} is pinned by digest only, so its postgres version cannot be read; the newest layout ({}) is assumed",
                            f.mount_path.as_deref().unwrap_or("")
                        ),
                    });
                }
            }
            let annotated_here = paths.iter().any(|p| p.source == Source::Annotation);
            cache_like = f.entry.cache_like
                && !durable_images.iter().any(|d| d == &f.entry.name)
                && !annotated_here;
            if f.entry.family == "redis" && explicit_cache(&words) && !annotated_here {
                explicit_cache_form = true;
            }
        }
        if explicit_cache_form {
            paths.retain(|p| !matches!(p.source, Source::Catalog | Source::Flag));
        }

        // A family known only from variables clients set too.
        if paths.is_empty()
            && entry.is_none()
            && !container.has_command()
            && let Some((var, family)) = CLIENT_ENV.iter().find(|(var, _)| has_env(container, var))
        {
            unresolved.push(Unresolved {
                    path: String::new(),
                    why: format!(
                        "{var} suggests a {family} server built on the official image, but clients set it too; if this container runs {family}, annotate the workload with {DATA_PATHS_ANNOTATION}"
                    ),
                });
        }

        // A mount at a path only one database uses, whatever the image.
        if paths.is_empty() && !explicit_cache_form {
            for m in container.mounts() {
                let Some(mp) = m.get("mountPath").and_then(Value::as_str) else {
                    continue;
                };
                let mp = normalize_path(mp);
                if let Some(e) = catalog.by_distinctive_path(&mp) {
                    push(&mut paths, mp, Source::DistinctiveMount, false);
                    if facts.is_none() {
                        let mut f = facts_for(
                            e,
                            &ImageRef {
                                repository: e.name.clone(),
                                tag: None,
                                digest: None,
                            },
                        );
                        // The image is not the catalog's: its VOLUMEs are unknown.
                        f.volumes.clear();
                        f.user = None;
                        f.fixes_ownership = false;
                        facts = Some(f);
                    }
                }
            }
        }

        if paths.is_empty() && unresolved.is_empty() {
            continue;
        }
        if is_pg || facts.as_ref().is_some_and(|f| f.entry.family == "postgres") {
            if pgdata.is_none() && !pgdata_hidden {
                pgdata = facts.as_ref().and_then(|f| f.data_paths.first().cloned());
            }
        } else {
            pgdata = None;
        }
        out.push(DbContainer {
            container: *container,
            image,
            facts,
            paths,
            unresolved,
            cache_like,
            pgdata_hidden,
            pgdata,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_locations_and_not_host_names() {
        let p = |s: &str| sqlite_paths(s);
        assert_eq!(
            p("sqlite:////state/export-state.db"),
            vec![("/state/export-state.db".into(), true)]
        );
        assert_eq!(p("sqlite:///mlflow.db"), vec![("mlflow.db".into(), false)]);
        assert_eq!(
            p("jdbc:sqlite:/data/x.sqlite"),
            vec![("/data/x.sqlite".into(), true)]
        );
        assert_eq!(
            p("Data Source=/srv/app.db;Cache=Shared"),
            vec![("/srv/app.db".into(), true)]
        );
        assert_eq!(
            p("file:/tmp/x.db?mode=rwc"),
            vec![("/tmp/x.db".into(), true)]
        );
        assert_eq!(
            p("/var/lib/ledger/ledger.sqlite3"),
            vec![("/var/lib/ledger/ledger.sqlite3".into(), true)]
        );
        assert!(p("postgres.db").is_empty());
        assert!(p("http://example.com/files/x.db").is_empty());
        assert!(p("/data/x.dbx").is_empty());
    }

    fn words_of(command: &[&str], args: &[&str]) -> Vec<Word> {
        let value = serde_json::json!({"name": "c", "command": command, "args": args});
        let c = Container {
            list: ContainerList::Containers,
            index: 0,
            name: "c",
            value: &value,
            sidecar: false,
        };
        command_words(&c)
    }

    #[test]
    fn flags_are_scoped_to_their_program() {
        let w = words_of(
            &[
                "sh",
                "-c",
                "mkdir -p /x && exec postgres -D /srv/pg -c shared_buffers=1GB",
            ],
            &[],
        );
        assert_eq!(flag_paths(&w, None), vec![("/srv/pg".into(), "postgres")]);
        // `-d` of another program is not rethinkdb's data directory.
        let w = words_of(&["myapp", "-d", "/srv/x"], &[]);
        assert!(flag_paths(&w, None).is_empty());
        let w = words_of(
            &[
                "/bin/bash",
                "-ecx",
                "exec /cockroach/cockroach start --store=path=/cockroach/cockroach-data,attrs=ssd",
            ],
            &[],
        );
        assert_eq!(
            flag_paths(&w, None),
            vec![("/cockroach/cockroach-data".into(), "cockroach")]
        );
        let w = words_of(&[], &["--dbpath", "/data/mine"]);
        assert_eq!(
            flag_paths(&w, Some("mongod")),
            vec![("/data/mine".into(), "mongo")]
        );
        let w = words_of(
            &["minio"],
            &["server", "/export", "--console-address", ":9001"],
        );
        assert_eq!(flag_paths(&w, None), vec![("/export".into(), "minio")]);
        let w = words_of(&["elasticsearch", "-Epath.data=/es"], &[]);
        assert_eq!(flag_paths(&w, None), vec![("/es".into(), "elasticsearch")]);
    }

    #[test]
    fn redis_cache_form_needs_both_flags() {
        assert!(explicit_cache(&words_of(
            &["redis-server", "--save", "", "--appendonly", "no"],
            &[]
        )));
        assert!(explicit_cache(&words_of(
            &["sh", "-c", "redis-server --save '' --appendonly no"],
            &[]
        )));
        assert!(!explicit_cache(&words_of(
            &["redis-server", "--appendonly", "no"],
            &[]
        )));
    }
}
