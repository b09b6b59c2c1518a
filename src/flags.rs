//! Parsers for flag values, written as Kubernetes users write them:
//! durations as Go does (`1m30s`, `2h`, `500ms`), sizes with units (`3Mi`,
//! `6MiB`, `1G`), listen addresses as `:8443` or `host:port`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A whole number above 0.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (`300ms`, `1m30s`,
/// `2h45m`, `1.5s`; units ns, us, µs, ms, s, m, h), or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 5s, 1m30s or 500ms");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A size in bytes: plain, or with a unit as Kubernetes (`3Mi`, `1G`) or
/// people (`6MiB`, `512KB`) write it.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("{s:?} is not a size such as 3145728, 3Mi or 6MiB");
    let text = s.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n: u64 = text[..end].parse().map_err(|_| bad())?;
    let scale: u64 = match text[end..].trim() {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "M" | "MB" => 1000_u64.pow(2),
        "G" | "GB" => 1000_u64.pow(3),
        "Ki" | "KiB" => 1024,
        "Mi" | "MiB" => 1024_u64.pow(2),
        "Gi" | "GiB" => 1024_u64.pow(3),
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(bad)
}

/// An address to listen on: `host:port`, `[::1]:port`, or `:port` for
/// every IPv4 interface. A name is resolved once, at start.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let text = s.trim();
    let text = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    text.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not an address to listen on (host:port or :port): {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("20"), Duration::from_secs(20));
        for bad in ["", "5x", "m", "1m30", "-5s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("3145728"), Ok(3 * 1024 * 1024));
        assert_eq!(parse_size("3Mi"), Ok(3 * 1024 * 1024));
        assert_eq!(parse_size("6MiB"), Ok(6 * 1024 * 1024));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        for bad in ["", "0", "6 MB MB", "1.5Mi", "3Xi", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8443").unwrap().to_string(), "0.0.0.0:8443");
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen("localhost:8443").unwrap().ip().is_loopback());
        assert!(parse_listen("8443").is_err());
    }
}
