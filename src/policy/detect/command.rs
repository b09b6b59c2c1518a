//! What a container runs: its command and args as words, with the program
//! positions marked (through shells, `exec`, `gosu` and friends), and the
//! data-directory flags of the server programs pvc-guard knows, each scoped
//! to its own program.

use crate::k8s::normalize_path;
use crate::model::Container;

/// How a server program names its data directory on the command line.
#[derive(Clone, Copy)]
pub(super) enum Flag {
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
pub(super) const SERVER_FLAGS: &[(&str, &str, &[Flag])] = &[
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
    ("consul", "consul", &[Flag::Value("-data-dir")]),
    ("nats-server", "nats", &[Flag::Value("--store_dir")]),
];

/// A program pvc-guard reads the command line of: a server, a shell or a
/// wrapper. Any other first word of `args` is the image's own server's
/// subcommand or argument.
pub(super) fn is_known_program(word: &str) -> bool {
    let base = basename(word);
    SERVER_FLAGS.iter().any(|(name, _, _)| *name == base)
        || SHELLS.contains(&base)
        || WRAPPERS.contains(&base)
        || USER_WRAPPERS.contains(&base)
}

/// `{--flag|default}` in a catalog path, replaced by the value the command
/// line gives `--flag` (`--flag VALUE` or `--flag=VALUE`), else `default`.
pub(super) fn expand_flags(path: &str, words: &[Word]) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..close];
        let (flag, default) = inner.split_once('|').unwrap_or((inner, ""));
        let value = words.iter().enumerate().find_map(|(i, w)| {
            if w.text == flag {
                words.get(i + 1).map(|n| n.text.as_str())
            } else {
                w.text.strip_prefix(flag)?.strip_prefix('=')
            }
        });
        out.push_str(
            value
                .filter(|v| !v.is_empty() && !v.contains('/'))
                .unwrap_or(default),
        );
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

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
pub fn command_words(container: &Container) -> Vec<Word> {
    let mut raw: Vec<(String, bool)> = Vec::new(); // (word, is a script)
    let elements = container.command().chain(container.args());
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
pub(super) fn names_server(words: &[Word], server_commands: &[String]) -> bool {
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

/// For each word, whether `sub` is one of the words before it since the last
/// program or `;`: one pass, where asking each word's predecessors cost the
/// square of a long script's length.
fn after_subcommand(words: &[Word], sub: &str) -> Vec<bool> {
    let mut seen = false;
    words
        .iter()
        .map(|w| {
            let before = seen;
            if w.program || w.text == ";" {
                seen = false;
            } else if w.text == sub {
                seen = true;
            }
            before
        })
        .collect()
}

/// Data directories named by server flags, scoped to their program.
pub(super) fn flag_paths(
    words: &[Word],
    implicit_program: Option<&str>,
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    // Per positional subcommand, worked out on first use: for each word,
    // whether that subcommand came before it in the same command.
    let mut subcommands: Vec<(&str, Vec<bool>)> = Vec::new();
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
                    let after_sub = match subcommands.iter().find(|(s, _)| *s == sub) {
                        Some((_, after)) => after[i],
                        None => {
                            let after = after_subcommand(words, sub);
                            let here = after[i];
                            subcommands.push((sub, after));
                            here
                        }
                    };
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

/// `--save ""` and `--appendonly no`: redis explicitly run as a cache.
pub(super) fn explicit_cache(words: &[Word]) -> bool {
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| w.text == flag)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.text.as_str())
    };
    after("--save") == Some("") && after("--appendonly") == Some("no")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(command: &[&str], args: &[&str]) -> Vec<Word> {
        let value = serde_json::json!({"name": "c", "command": command, "args": args});
        command_words(&Container::from_value(&value))
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
