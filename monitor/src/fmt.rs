//! Short, fixed-style text for numbers, durations and times on the
//! dashboard. Pure functions, so the screen is the same on every run.

/// A duration in microseconds, short: `850µs`, `4.2ms`, `310ms`, `1.6s`,
/// `42s`, `3m05s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..10_000 => format!("{:.1}ms", us as f64 / 1e3),
        10_000..1_000_000 => format!("{}ms", us / 1_000),
        1_000_000..10_000_000 => format!("{:.1}s", us as f64 / 1e6),
        10_000_000..60_000_000 => format!("{}s", us / 1_000_000),
        _ => {
            let s = us / 1_000_000;
            format!("{}m{:02}s", s / 60, s % 60)
        }
    }
}

/// A latency in milliseconds with one decimal below 100 ms: `0.4`, `12.3`,
/// `250`, `1234`.
pub fn fmt_ms(us: u64) -> String {
    if us < 100_000 {
        format!("{:.1}", us as f64 / 1e3)
    } else {
        format!("{}", us / 1_000)
    }
}

/// A per-second rate: `0/s`, `3.5/s`, `120/s`, `12.5k/s`.
pub fn fmt_rate(per_s: f64) -> String {
    let r = if per_s.is_finite() {
        per_s.max(0.0)
    } else {
        0.0
    };
    if r == 0.0 {
        "0/s".to_string()
    } else if r < 100.0 {
        format!("{r:.1}/s")
    } else if r < 10_000.0 {
        format!("{r:.0}/s")
    } else {
        format!("{:.1}k/s", r / 1e3)
    }
}

/// Time of day `HH:MM:SS` of `at_us` (microseconds since the Unix epoch),
/// shifted by `utc_offset_s` (the local zone's offset, decided once at
/// start-up so that rendering never asks the system for the time zone).
pub fn fmt_clock(at_us: i64, utc_offset_s: i32) -> String {
    let secs = at_us.div_euclid(1_000_000) + i64::from(utc_offset_s);
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}

/// Seconds to wait, rounded up so that "0s" means "now".
pub fn fmt_wait(wait: std::time::Duration) -> String {
    let ms = wait.as_millis();
    if ms == 0 {
        "now".to_string()
    } else {
        format!("in {}s", ms.div_ceil(1000))
    }
}

/// An event's key cut to at most `width` terminal cells, ending in `…`
/// when cut. A key is arbitrary text from a client, so control characters
/// (a newline would break the screen's lines) are shown as `�`. An empty
/// key (the event has none) is `–`.
pub fn fmt_key(key: &str, width: usize) -> String {
    if key.is_empty() {
        return "–".to_string();
    }
    let cells = |c: char| {
        let mut buf = [0; 4];
        ratatui::text::Span::raw(&*c.encode_utf8(&mut buf)).width()
    };
    let printable = |c: char| if c.is_control() { '\u{fffd}' } else { c };
    let total: usize = key.chars().map(|c| cells(printable(c))).sum();
    if total <= width {
        return key.chars().map(printable).collect();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in key.chars().map(printable) {
        // One cell stays free for the ellipsis.
        if used + cells(c) + 1 > width {
            break;
        }
        used += cells(c);
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(4_200), "4.2ms");
        assert_eq!(fmt_us(310_000), "310ms");
        assert_eq!(fmt_us(1_600_000), "1.6s");
        assert_eq!(fmt_us(42_000_000), "42s");
        assert_eq!(fmt_us(185_000_000), "3m05s");
        assert_eq!(fmt_ms(400), "0.4");
        assert_eq!(fmt_ms(1_234_000), "1234");
    }

    #[test]
    fn rates() {
        assert_eq!(fmt_rate(0.0), "0/s");
        assert_eq!(fmt_rate(-1.0), "0/s");
        assert_eq!(fmt_rate(f64::NAN), "0/s");
        assert_eq!(fmt_rate(3.46), "3.5/s");
        assert_eq!(fmt_rate(120.2), "120/s");
        assert_eq!(fmt_rate(12_500.0), "12.5k/s");
    }

    #[test]
    fn clock_and_wait() {
        // 2024-01-01T12:34:56Z.
        let at = 1_704_112_496_000_000;
        assert_eq!(fmt_clock(at, 0), "12:34:56");
        assert_eq!(fmt_clock(at, 3600), "13:34:56");
        assert_eq!(fmt_clock(at, -13 * 3600), "23:34:56");
        assert_eq!(fmt_wait(Duration::ZERO), "now");
        assert_eq!(fmt_wait(Duration::from_millis(200)), "in 1s");
        assert_eq!(fmt_wait(Duration::from_millis(2500)), "in 3s");
    }

    #[test]
    fn keys() {
        assert_eq!(fmt_key("", 8), "–");
        assert_eq!(fmt_key("user-12", 8), "user-12");
        assert_eq!(fmt_key("user-12345", 8), "user-12…");
        assert_eq!(fmt_key("a\nb", 8), "a\u{fffd}b");
        // Wide characters take two cells each.
        assert_eq!(fmt_key("顧客番号九", 6), "顧客…");
        assert_eq!(fmt_key("abc", 0), "");
    }
}
