//! Sizes, ages and tables printed the way the `docker` command prints them, so that
//! people (and scripts) reading `kiln images` or `kiln history` next to `docker images`
//! see the same words: `4.27MB`, `2 minutes ago`, columns three spaces apart.

use std::io::{self, Write};
use std::time::Duration;

use jiff::Timestamp;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns under a header.
    #[default]
    Table,
    /// One JSON object per line, keyed by Docker's field names.
    Json,
}

/// A byte count in decimal units with three significant digits (`1.98MB`, `0B`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", significant(value, 3), UNITS[unit])
}

/// Parses a size as `docker builder prune --keep-storage` does: a number, optionally a
/// space, then an optional unit of `k`, `m`, `g`, `t` or `p` (powers of 1024; `i` and
/// `b` may follow), case-insensitive: `512MB`, `1.5g`, `10 GiB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {text:?} (expected a number with an optional unit like 512MB or 10GB)"
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `value` with `digits` significant digits and no trailing zeros, as C's `%.*g`.
fn significant(value: f64, digits: usize) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    let sci = format!("{:.*e}", digits - 1, value);
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    if exp < -4 || exp >= digits as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_zeros(mantissa), exp.abs());
    }
    let decimals = (digits as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_owned()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// How long ago `then` was, in Docker's words (`Less than a second ago`,
/// `About an hour ago`, `3 weeks ago`).
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let elapsed = now.duration_since(then);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    format!("{} ago", duration(elapsed))
}

fn duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_owned(),
        _ if seconds == 1 => "1 second".to_owned(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// `s` cut to `max` characters, the last one an ellipsis, when longer.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows of cells printed as aligned columns: every column but the last is padded to
/// its widest cell plus three spaces, and to at least ten characters.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the table.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let widest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0);
                (widest + 3).max(10)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(3), "3B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1000), "1kB");
        assert_eq!(size(1_982_277), "1.98MB");
        assert_eq!(size(4_270_000), "4.27MB");
        assert_eq!(size(72_800_000), "72.8MB");
        assert_eq!(size(123_456_789_012), "123GB");
        assert_eq!(size(999_999), "1e+03kB");
    }

    #[test]
    fn ages_match_docker() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (800 * 86400, "2 years"),
        ];
        for (secs, want) in cases {
            assert_eq!(duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        let now = Timestamp::from_second(1_000_000).unwrap();
        let then = Timestamp::from_second(1_000_000 - 125).unwrap();
        assert_eq!(ago(then, now), "2 minutes ago");
        assert_eq!(ago(now, then), "Less than a second ago");
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("10 GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("").is_err());
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("-3MB").is_err());
    }

    #[test]
    fn ellipsis_cuts_to_the_limit() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "/bin/sh -c #(nop)  CMD [\"/bin/sh\" \"-c\" \"echo a very long\"]";
        let cut = ellipsis(long, 45);
        assert_eq!(cut, "/bin/sh -c #(nop)  CMD [\"/bin/sh\" \"-c\" \"echo…");
        assert_eq!(cut.chars().count(), 45);
    }

    #[test]
    fn tables_pad_like_docker() {
        let mut t = Table::new(&["IMAGE", "SIZE", "COMMENT"]);
        t.row(vec![
            "dcda15e5942e".into(),
            "1.98MB".into(),
            "Imported from -".into(),
        ]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "IMAGE          SIZE      COMMENT\n\
             dcda15e5942e   1.98MB    Imported from -\n"
        );
    }
}
