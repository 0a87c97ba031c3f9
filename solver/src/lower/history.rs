//! Image history entries and progress names, written byte for byte as BuildKit writes
//! them.
//!
//! Tools compare these strings (`docker history`, cache importers, people diffing two
//! images), so they follow BuildKit's `commitToHistory` and the `fmt` verbs it uses:
//! `%q` of a string list for CMD/ENTRYPOINT (`["a" "b"]`), `%v` for SHELL/VOLUME (`[a b]`)
//! and of EXPOSE's port set (`map[80/tcp:{}]`), `%q` of the health check (`&{…}`), and the
//! `|N KEY=value` prefix of RUN when build arguments are in its environment.

use kiln_image::config::HealthConfig;
use kiln_parser::golang;
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
    let quoted: Vec<String> = items.iter().map(|s| golang::quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `map[string]struct{}` (Docker's port set): `map[80/tcp:{} 9/udp:{}]`,
/// keys in byte order as Go's `fmt` sorts them.
pub(crate) fn go_set(keys: &[String]) -> String {
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    let entries: Vec<String> = keys.iter().map(|k| format!("{k}:{{}}")).collect();
    format!("map[{}]", entries.join(" "))
}

/// `HEALTHCHECK` as BuildKit's `%q` of Docker's health config prints it:
/// `&{["CMD" "x"] "5s" "3s" "0s" "0s" '\x04'}` (test, interval, timeout, start period,
/// start interval, retries).
pub(crate) fn healthcheck(check: &HealthConfig) -> String {
    let duration = |nanos: u64| golang::quote(&golang::format_duration(nanos));
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} {}}}",
        go_quoted_list(&check.test),
        duration(check.interval),
        duration(check.timeout),
        duration(check.start_period),
        duration(check.start_interval),
        golang::quote_rune(check.retries)
    )
}

/// The `RUN` entry: `|N A=1 B=2 ` before the command when the stage declared build
/// arguments, each with its value in the step environment (or its declared one).
pub(crate) fn run(args: &[String], declared: &[DeclaredArg], env: &dyn Env) -> String {
    // Every declaration, a redeclared name once per declaration, each with the value
    // the name has now: that is how BuildKit lists them.
    let pairs: Vec<(String, String)> = declared
        .iter()
        .map(|arg| {
            let value = env
                .get(&arg.name)
                .map(str::to_owned)
                .unwrap_or_else(|| arg.value.clone().unwrap_or_default());
            (arg.name.clone(), value)
        })
        .collect();
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
    fn lists_print_as_go_prints_them() {
        let v = vec!["a b".to_owned(), "c\"d".to_owned()];
        assert_eq!(go_list(&v), "[a b c\"d]");
        assert_eq!(go_quoted_list(&v), r#"["a b" "c\"d"]"#);
    }
}
