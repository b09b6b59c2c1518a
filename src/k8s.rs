//! Kubernetes vocabulary every layer shares: paths inside a container,
//! resource quantities, object names and JSON Pointer tokens. A leaf: it
//! imports nothing from the crate.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Does `outer` contain `inner`, comparing whole path components?
/// (`/data` contains `/data/db`, not `/database`.)
pub fn path_contains(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    if outer.is_empty() {
        return inner.starts_with('/');
    }
    inner == outer || (inner.starts_with(outer) && inner[outer.len()..].starts_with('/'))
}

/// `/a/./b/../c/` as `/a/c`: how the kubelet resolves a mount path.
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The directory holding `path`.
pub fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.to_string(),
    }
}

/// A resource quantity as Kubernetes parses it (`10Gi`, `500M`, `1.5`,
/// `1e3`), in bytes when it is a storage size. `None`: not a quantity.
/// Sizes are compared, never printed back: the user's text is kept.
pub fn parse_quantity(q: &str) -> Option<f64> {
    // Signs are valid in Kubernetes quantities, but no size here is negative.
    let rest = q.trim();
    let digits_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s => {
            let e: i32 = s.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(n * scale)
}

/// A DNS-1123 label: what container, volume and namespace names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain as Kubernetes checks it (what most object names,
/// claims among them, must be): at most 253 characters in all, parts
/// between dots of any length.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A short hex digest of `text`: ten characters, enough to tell names apart.
pub fn short_hash(text: &str) -> String {
    use std::fmt::Write;
    let hash = Sha256::digest(text.as_bytes());
    hash.iter().take(5).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `name` as a DNS-1123 subdomain of at most `max` characters: every part
/// between dots starts and ends with a letter or digit (a name made from a
/// workload's own name, which the API server has not yet checked, must
/// still be one the API server and the UPDATE record accept); a longer one
/// keeps its start and ends with a hash of the whole.
pub fn shorten(name: &str, max: usize) -> String {
    let lower = name.to_ascii_lowercase();
    let clean = lower
        .split('.')
        .map(|part| {
            part.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
        })
        .filter_map(|part| Some(part.trim_matches('-').to_string()).filter(|p| !p.is_empty()))
        .collect::<Vec<_>>()
        .join(".");
    if !clean.is_empty() && clean.len() <= max {
        return clean;
    }
    let hex = short_hash(name);
    let keep = clean[..clean.len().min(max - hex.len() - 1)].trim_end_matches(['-', '.']);
    if keep.is_empty() {
        hex
    } else {
        format!("{keep}-{hex}")
    }
}

/// Paths (a container's mountPaths) by what they contain: for any path,
/// the longest of them that contains it (`path_contains`), in time linear
/// in that path's length. Comparing the path with each of them costs their
/// total length per path; looking up each of its parent directories costs
/// the square of its depth. Here each parent's hash is extended from the
/// one before, and only the longest hit is compared byte for byte.
///
/// Of paths equal but for trailing slashes, the longest as written wins;
/// across different ones, the longest without them (the same thing once
/// paths are normalised, as the view's mountPaths are).
pub struct PathIndex<'p, T> {
    state: std::hash::RandomState,
    /// By the hash of the path without trailing slashes: that path and,
    /// of the paths that give it, the value of the longest as written (of
    /// equal ones, the last).
    by_hash: std::collections::HashMap<u64, Vec<(Cow<'p, str>, usize, T)>>,
}

impl<'p, T: Copy> PathIndex<'p, T> {
    pub fn new(paths: impl IntoIterator<Item = (&'p str, T)>) -> PathIndex<'p, T> {
        let mut index = PathIndex {
            state: std::hash::RandomState::new(),
            by_hash: std::collections::HashMap::new(),
        };
        for (raw, value) in paths {
            index.insert(Cow::Borrowed(raw), value);
        }
        index
    }

    pub fn insert(&mut self, raw: Cow<'p, str>, value: T) {
        let len = raw.len();
        let key = match raw {
            Cow::Borrowed(raw) => Cow::Borrowed(raw.trim_end_matches('/')),
            Cow::Owned(mut raw) => {
                raw.truncate(raw.trim_end_matches('/').len());
                Cow::Owned(raw)
            }
        };
        let entries = self.by_hash.entry(self.whole_hash(&key)).or_default();
        match entries.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) if len >= entry.1 => *entry = (key, len, value),
            Some(_) => {}
            None => entries.push((key, len, value)),
        }
    }

    /// The value of the longest path that contains `path`.
    pub fn longest_containing(&self, path: &str) -> Option<T> {
        self.containing(path).next()
    }

    /// The values of all the paths that contain `path`, longest first.
    pub fn containing(&self, path: &str) -> impl Iterator<Item = T> {
        // Every path that contains it is `path` itself or ends at one of
        // its slashes (the root's key is the empty string).
        let mut prefixes = Vec::new();
        if !path.is_empty() {
            self.prefix_hashes(path, |end, hash| prefixes.push((end, hash)));
        }
        prefixes.into_iter().rev().filter_map(move |(end, hash)| {
            let key = &path[..end];
            self.by_hash
                .get(&hash)?
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, value)| *value)
        })
    }

    fn whole_hash(&self, path: &str) -> u64 {
        let mut last = 0;
        self.prefix_hashes(path, |_, hash| last = hash);
        last
    }

    /// Calls `f(end, hash of path[..end])` at each slash and at the end,
    /// each hash extended from the last by the bytes since. A path's own
    /// hash comes from the same calls, so the two agree however the
    /// hasher treats split writes.
    fn prefix_hashes(&self, path: &str, mut f: impl FnMut(usize, u64)) {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.state.build_hasher();
        let mut from = 0;
        for (end, _) in path
            .match_indices('/')
            .chain(std::iter::once((path.len(), "")))
        {
            hasher.write(&path.as_bytes()[from..end]);
            from = end;
            f(end, hasher.finish());
        }
    }
}

/// One JSON Pointer token: `~` and `/` escaped (RFC 6901).
pub fn pointer_token(key: &str) -> Cow<'_, str> {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1").into()
    } else {
        key.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_containment_is_by_whole_components() {
        assert!(path_contains("/data", "/data/db"));
        assert!(path_contains("/data/", "/data/db"));
        assert!(path_contains("/data", "/data"));
        assert!(!path_contains("/data", "/database"));
        assert!(path_contains("/", "/anything"));
        assert_eq!(normalize_path("/a/./b/../c/"), "/a/c");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(parent_dir("/srv/app.db"), "/srv");
        assert_eq!(parent_dir("/app.db"), "/");
    }

    #[test]
    fn quantities_as_kubernetes_reads_them() {
        assert_eq!(parse_quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("1.5T"), Some(1.5e12));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        for bad in [
            "ten", "10GB", "", "Gi", "1..5Gi", "10 Gi", "1e", "5Gi;rm", "-5Gi",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_shortened_with_a_hash() {
        let long = "a".repeat(80);
        let s = shorten(&format!("pvc-guard-{long}"), 63);
        assert_eq!(s.len(), 63);
        assert!(s.starts_with("pvc-guard-aaa"));
        assert_ne!(s, shorten(&format!("pvc-guard-{long}b"), 63));
        assert_eq!(shorten("pvc-guard-db", 63), "pvc-guard-db");
        // Every part between dots is a label of its own.
        assert_eq!(shorten("Orders)\0.-0-)8..x_", 253), "orders.0--8.x");
        for odd in [
            "metadata)\0\u{7f}\\.0\\)8\0\0",
            "..",
            "-",
            "",
            "é.é",
            "a.-.b",
        ] {
            let s = shorten(odd, 253);
            assert!(is_dns_subdomain(&s), "{odd:?} gave {s:?}");
        }
        assert!(is_dns_label("pvc-guard-db"));
        assert!(!is_dns_label("Db"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_dns_subdomain(&"a".repeat(100)), "no per-part limit");
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert_eq!(
            pointer_token("pvc-guard.io/mutated"),
            "pvc-guard.io~1mutated"
        );
    }
}
