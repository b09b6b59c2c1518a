//! SQLite (and DuckDB) files named in a container's environment, command
//! and args: absolute paths, and URIs whose path may be relative.

use std::sync::LazyLock;

use regex::Regex;

use crate::k8s::normalize_path;

static SQLITE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(jdbc:sqlite:|sqlite3?:///|sqlite3?:|file:|data source\s*=\s*)?([A-Za-z0-9_./~+@%-]*\.(?:sqlite3|sqlite|duckdb|db))(?:$|[\s"'?;,&)\]])"#,
    )
    .expect("valid regex")
});

/// Where a database file named in a string lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlitePath {
    /// An absolute path, normalised.
    Absolute(String),
    /// A path relative to the working directory.
    Relative(String),
    /// A path that starts with a `$(VAR)` reference, which the kubelet
    /// expands and pvc-guard does not: where it lands is unknown.
    Unexpanded(String),
}

/// Where the `$(NAME)` that `before` ends with starts. Only the name is
/// looked at, never the text before it: a search back for any `$(` cost
/// each match the length of everything before it, and copied all of it.
/// (Each name ends at its own `)`, so all the names a string's matches
/// look at are at most the string.)
fn reference_before(before: &str) -> Option<usize> {
    let inner = before.strip_suffix(')')?;
    let name =
        inner.trim_end_matches(|c: char| !matches!(c, '(' | ')' | '$') && !c.is_whitespace());
    let start = name.strip_suffix("$(")?.len();
    (name.len() < inner.len()).then_some(start)
}

/// SQLite (and DuckDB) file locations in one string: absolute paths, or
/// URIs whose path may be relative. Host names (`postgres.db`) are skipped.
pub fn sqlite_paths(text: &str) -> Vec<SqlitePath> {
    let mut out = Vec::new();
    for cap in SQLITE.captures_iter(text) {
        let whole = cap.get(0).expect("match");
        let path_match = cap.get(2).expect("path group");
        let path = path_match.as_str();
        let prefixed = cap.get(1).is_some();
        let before = &text[..whole.start()];
        // `http://host/x.db` and friends: a scheme we do not know.
        if !prefixed && before.ends_with(':') {
            continue;
        }
        if let Some(start) = reference_before(before) {
            out.push(SqlitePath::Unexpanded(
                text[start..path_match.end()].to_string(),
            ));
            continue;
        }
        if path.starts_with('/') {
            if path.starts_with("//") && !prefixed {
                continue;
            }
            out.push(SqlitePath::Absolute(normalize_path(path)));
        } else if prefixed && !path.is_empty() && !path.starts_with('.')
            || prefixed && path.starts_with("./")
        {
            out.push(SqlitePath::Relative(
                path.trim_start_matches("./").to_string(),
            ));
        }
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
            vec![SqlitePath::Absolute("/state/export-state.db".into())]
        );
        assert_eq!(
            p("sqlite:///mlflow.db"),
            vec![SqlitePath::Relative("mlflow.db".into())]
        );
        assert_eq!(
            p("jdbc:sqlite:/data/x.sqlite"),
            vec![SqlitePath::Absolute("/data/x.sqlite".into())]
        );
        assert_eq!(
            p("Data Source=/srv/app.db;Cache=Shared"),
            vec![SqlitePath::Absolute("/srv/app.db".into())]
        );
        assert_eq!(
            p("file:/tmp/x.db?mode=rwc"),
            vec![SqlitePath::Absolute("/tmp/x.db".into())]
        );
        assert_eq!(
            p("/var/lib/ledger/ledger.sqlite3"),
            vec![SqlitePath::Absolute(
                "/var/lib/ledger/ledger.sqlite3".into()
            )]
        );
        assert!(p("postgres.db").is_empty());
        assert!(p("http://example.com/files/x.db").is_empty());
        assert!(p("/data/x.dbx").is_empty());
        assert_eq!(
            p("sqlite:///$(DATA_DIR)/app.db"),
            vec![SqlitePath::Unexpanded("$(DATA_DIR)/app.db".into())]
        );
        assert_eq!(
            p("$(app.data-dir)/app.db"),
            vec![SqlitePath::Unexpanded("$(app.data-dir)/app.db".into())]
        );
        // A `)` that closes no reference right before the path: the path
        // is what it says, and nothing before it is copied into it.
        assert_eq!(p("$(A) )/x.db"), vec![SqlitePath::Absolute("/x.db".into())]);
        assert_eq!(
            p(&format!("$({}/a.db", ")/a.db ".repeat(3))),
            vec![SqlitePath::Absolute("/a.db".into()); 4]
        );
    }
}
