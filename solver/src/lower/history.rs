//! Image history entries and progress names, written byte for byte as BuildKit writes
//! them.
//!
//! Tools compare these strings (`docker history`, cache importers, people diffing two
//! images), so they follow BuildKit's `commitToHistory` and the `fmt` verbs it uses:
//! `%q` of a string list for CMD/ENTRYPOINT (`["a" "b"]`), `%v` for SHELL/VOLUME/EXPOSE
//! (`[a b]`), `%+v` of the health check with Go's duration format (`1m30s`), and the
//! `|N KEY=value` prefix of RUN when build arguments are in its environment.

use std::fmt::Write;

use kiln_image::config::HealthConfig;
use kiln_parser::shell::Env;

use super::args::DeclaredArg;

/// The comment BuildKit puts on every entry it writes.
pub(crate) const COMMENT: &str = "buildkit.dockerfile.v0";

/// Go's `%v` of a string slice: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub(crate) fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote` for the characters a Dockerfile can hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String` for a non-negative number of nanoseconds.
pub(crate) fn go_duration(nanos: u64) -> String {
    fn fraction(value: u64, digits: u32) -> String {
        let unit = 10u64.pow(digits);
        let (whole, frac) = (value / unit, value % unit);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:0width$}", width = digits as usize);
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    match nanos {
        0 => "0s".to_owned(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", fraction(n, 3)),
        n if n < 1_000_000_000 => format!("{}ms", fraction(n, 6)),
        n => {
            let secs = n / 1_000_000_000;
            let s = fraction((secs % 60) * 1_000_000_000 + n % 1_000_000_000, 9);
            let (h, m) = (secs / 3600, secs / 60 % 60);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

/// `HEALTHCHECK` as BuildKit's `%+v` of Docker's health config prints it.
pub(crate) fn healthcheck(check: &HealthConfig) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&check.test),
        go_duration(check.interval),
        go_duration(check.timeout),
        go_duration(check.start_period),
        go_duration(check.start_interval),
        check.retries
    )
}

/// The `RUN` entry: `|N A=1 B=2 ` before the command when the stage declared build
/// arguments, each with its value in the step environment (or its declared one).
pub(crate) fn run(args: &[String], declared: &[DeclaredArg], env: &dyn Env) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for arg in declared {
        let value = env
            .get(&arg.name)
            .map(str::to_owned)
            .unwrap_or_else(|| arg.value.clone().unwrap_or_default());
        match pairs.iter_mut().find(|(k, _)| *k == arg.name) {
            Some(pair) => pair.1 = value,
            None => pairs.push((arg.name.clone(), value)),
        }
    }
    let mut words: Vec<String> = Vec::new();
    if !pairs.is_empty() {
        words.push(format!("|{}", pairs.len()));
        words.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(args.iter().cloned());
    format!("RUN {}", words.join(" "))
}

/// BuildKit's `uppercaseCmd`: the first word in upper case.
pub(crate) fn uppercase_command(text: &str) -> String {
    match text.split_once(' ') {
        Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
        None => text.to_uppercase(),
    }
}

/// The progress label of a heredoc: its first line, `...` when there are more.
pub(crate) fn heredoc_summary(doc: &str) -> String {
    let doc = doc.trim();
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().trim_end_matches('\r');
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(100_000_000), "100ms");
        assert_eq!(go_duration(1_500), "1.5µs");
    }

    #[test]
    fn lists_print_as_go_prints_them() {
        let v = vec!["a b".to_owned(), "c\"d".to_owned()];
        assert_eq!(go_list(&v), "[a b c\"d]");
        assert_eq!(go_quoted_list(&v), r#"["a b" "c\"d"]"#);
    }
}
