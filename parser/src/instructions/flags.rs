//! Instruction flags (`--from=build`, `--link`), checked as BuildKit's `BFlags` checks
//! them: every flag must be one the instruction declares; value flags need `=value`
//! (an empty value is allowed); boolean flags are bare or `=true`/`=false` (any case);
//! only list flags (`--mount`, `--exclude`) may repeat.

use crate::error::{ErrorKind, ParseError};
use crate::span::Span;
use crate::syntax::line::RawFlag;

/// What kind of value a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Value,
    List,
}

/// One flag given on the instruction, its value borrowed from the node.
struct Given<'a> {
    name: &'static str,
    value: &'a str,
    span: Span,
}

/// The flags of one instruction, validated against its declaration.
pub(crate) struct Flags<'a> {
    given: Vec<Given<'a>>,
}

impl<'a> Flags<'a> {
    /// Checks `flags`, cut from the logical line `line`, against the declared
    /// `(name, kind)` pairs.
    pub(crate) fn parse(
        instruction: &'static str,
        flags: &'a [RawFlag],
        line: &'a str,
        declared: &[(&'static str, Kind)],
    ) -> Result<Flags<'a>, ParseError> {
        let mut given: Vec<Given<'a>> = Vec::with_capacity(flags.len());
        for flag in flags {
            let err = |kind| ParseError::new(kind, flag.span);
            let text = flag.text.get(line);
            let body = text.strip_prefix("--").unwrap_or(text);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = declared.iter().find(|(n, _)| *n == name) else {
                return Err(err(ErrorKind::UnknownFlag {
                    instruction,
                    flag: name.to_owned(),
                }));
            };
            if kind != Kind::List && given.iter().any(|g| g.name == name) {
                return Err(err(ErrorKind::DuplicateFlag {
                    flag: name.to_owned(),
                }));
            }
            let value = match (kind, value) {
                (Kind::Bool, None) => "true",
                (Kind::Bool, Some(v)) => match v {
                    _ if v.eq_ignore_ascii_case("true") => "true",
                    _ if v.eq_ignore_ascii_case("false") => "false",
                    "" => {
                        return Err(err(ErrorKind::FlagMissingValue {
                            flag: name.to_owned(),
                        }));
                    }
                    _ => {
                        return Err(err(ErrorKind::FlagNotBool {
                            flag: name.to_owned(),
                            value: v.to_owned(),
                        }));
                    }
                },
                (_, None) => {
                    return Err(err(ErrorKind::FlagMissingValue {
                        flag: name.to_owned(),
                    }));
                }
                (_, Some(v)) => v,
            };
            given.push(Given {
                name,
                value,
                span: flag.span,
            });
        }
        Ok(Flags { given })
    }

    /// The value of a single-valued flag, with its span.
    pub(crate) fn value(&self, name: &str) -> Option<(&'a str, Span)> {
        self.given
            .iter()
            .find(|g| g.name == name)
            .map(|g| (g.value, g.span))
    }

    /// The value of a single-valued flag; an empty value counts as not given, as in
    /// BuildKit (`--from=` copies from the context).
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.value(name)
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| v.to_owned())
    }

    /// A boolean flag: `None` when not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.value(name).map(|(v, _)| v == "true")
    }

    /// Every value of a list flag, in order, with spans.
    pub(crate) fn list(&self, name: &str) -> impl Iterator<Item = (&'a str, Span)> {
        self.given
            .iter()
            .filter(move |g| g.name == name)
            .map(|g| (g.value, g.span))
    }
}
