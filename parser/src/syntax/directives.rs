//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`).
//!
//! Directives are only looked for at the very top of the file: the first line that is
//! not a well-formed directive of a known name (a comment, a blank line, an instruction,
//! `# unknown=x`) ends the search for good. Each directive may be given once; keys are
//! case-insensitive. This mirrors BuildKit's `DirectiveParser`, including its regular
//! expression `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, reproduced by hand below.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::char as one_char;
use nom::combinator::recognize;
use nom::sequence::pair;
use serde::Serialize;

use crate::span::Span;

/// One parser directive from the top of the Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive's name, lowercased (`syntax`, `escape` or `check`).
    pub name: String,
    /// Its value, trimmed.
    pub value: String,
    /// The directive's line.
    pub span: Span,
}

/// A directive line recognised, before validation.
pub(super) struct DirectiveMatch<'a> {
    pub(super) name: String,
    pub(super) value: &'a str,
}

/// The state of the directive search.
#[derive(Default)]
pub(super) struct DirectiveScanner {
    done: bool,
}

/// Go regexp's `\s`.
fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

fn directive_key(input: &str) -> IResult<&str, &str> {
    recognize(pair(
        take_while1(|c: char| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ))
    .parse(input)
}

/// `key \s* = \s* value` after the `#`, or `None` when the line is not of that shape.
fn key_value(input: &str) -> Option<(&str, &str)> {
    let (rest, key) = directive_key(input).ok()?;
    let rest = rest.trim_start_matches(is_go_space);
    let (rest, _) = one_char::<_, nom::error::Error<&str>>('=')
        .parse(rest)
        .ok()?;
    let trimmed = rest.trim_start_matches(is_go_space);
    let value = if trimmed.is_empty() {
        // `(.+?)` must take one character: with only spaces left, it takes the last.
        let last = rest.chars().next_back()?;
        &rest[rest.len() - last.len_utf8()..]
    } else {
        trimmed.trim_end_matches(is_go_space)
    };
    Some((key, value))
}

impl DirectiveScanner {
    /// Looks at one line (leading whitespace already removed). Returns the directive it
    /// holds, if the search is still on and the line is one.
    #[inline]
    pub(super) fn scan<'a>(&mut self, line: &'a str) -> Option<DirectiveMatch<'a>> {
        match self.done {
            true => None,
            false => self.scan_line(line),
        }
    }

    /// [`DirectiveScanner::scan`] while the search is on.
    fn scan_line<'a>(&mut self, line: &'a str) -> Option<DirectiveMatch<'a>> {
        let found = line
            .strip_prefix('#')
            .map(|rest| rest.trim_start())
            .and_then(key_value)
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .filter(|(key, _)| matches!(key.as_str(), "syntax" | "escape" | "check"));
        match found {
            Some((name, value)) => Some(DirectiveMatch { name, value }),
            None => {
                self.done = true;
                None
            }
        }
    }
}

/// The `check` directive's settings: which lint rules to skip, and whether warnings fail
/// the build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// Every rule is skipped (`skip=all`).
    pub skip_all: bool,
    /// The rules named in `skip=a,b`.
    pub skip: Vec<String>,
    /// Warnings are errors (`error=true`).
    pub error: bool,
}

impl CheckConfig {
    /// Parses a `check` directive value, `skip=<rules|all>;error=<bool>`. On failure
    /// returns the offending option.
    pub fn parse(value: &str) -> Result<CheckConfig, String> {
        let value = value.trim();
        let mut config = CheckConfig::default();
        if value.is_empty() {
            return Ok(config);
        }
        for part in value.splitn(2, ';') {
            let (key, val) = part.split_once('=').ok_or_else(|| part.to_owned())?;
            match key.trim() {
                "skip" if val.trim() == "all" => config.skip_all = true,
                "skip" => config.skip = val.split(',').map(|r| r.trim().to_owned()).collect(),
                "error" => {
                    config.error =
                        crate::golang::parse_bool(val.trim()).ok_or_else(|| part.to_owned())?;
                }
                other => return Err(other.to_owned()),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(line: &str) -> Option<(String, String)> {
        DirectiveScanner::default()
            .scan(line)
            .map(|m| (m.name, m.value.to_owned()))
    }

    #[test]
    fn directive_shapes() {
        assert_eq!(
            scan("#  Syntax = docker/dockerfile:1  "),
            Some(("syntax".into(), "docker/dockerfile:1".into()))
        );
        assert_eq!(scan("# escape=`"), Some(("escape".into(), "`".into())));
        assert_eq!(scan("# escape=  "), Some(("escape".into(), " ".into())));
        assert_eq!(scan("# escape="), None);
        assert_eq!(scan("# unknown=x"), None);
        assert_eq!(scan("# a comment"), None);
        assert_eq!(scan("FROM x"), None);
    }

    #[test]
    fn search_stops_at_first_non_directive() {
        let mut s = DirectiveScanner::default();
        assert!(s.scan("# syntax=x").is_some());
        assert!(s.scan("# hello").is_none());
        assert!(s.scan("# escape=`").is_none());
    }

    #[test]
    fn check_values() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert_eq!(CheckConfig::parse("error=maybe"), Err("error=maybe".into()));
        assert_eq!(CheckConfig::parse("bogus=1"), Err("bogus".into()));
        assert_eq!(CheckConfig::parse("nothing"), Err("nothing".into()));
    }
}
