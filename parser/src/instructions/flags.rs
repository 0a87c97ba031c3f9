//! Instruction flags (`--from=build`, `--link`), checked as BuildKit's `BFlags` checks
//! them: every flag must be one the instruction declares; value flags need `=value`
//! (an empty value is allowed); boolean flags are bare or `=true`/`=false` (any case);
//! only list flags (`--mount`, `--exclude`) may repeat.

use std::borrow::Cow;

use crate::error::{ErrorKind, ParseError};
use crate::span::Span;
use crate::syntax::line::{LineText, RawFlag, Text};

/// What kind of value a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Value,
    List,
}

/// One flag given on the instruction, its value borrowed from the node.
struct Given<'r> {
    name: &'static str,
    value: &'r str,
    /// Where the value is in the logical line, when the flag is written as is there.
    range: Option<(usize, usize)>,
    span: Span,
}

/// The flags of one instruction, validated against its declaration.
pub(crate) struct Flags<'r, 'src> {
    given: Vec<Given<'r>>,
    text: LineText<'r, 'src>,
}

impl<'r, 'src> Flags<'r, 'src> {
    /// Checks `flags`, cut from the logical line `text`, against the declared
    /// `(name, kind)` pairs.
    pub(crate) fn parse(
        instruction: &'static str,
        flags: &'r [RawFlag],
        text: LineText<'r, 'src>,
        declared: &[(&'static str, Kind)],
    ) -> Result<Flags<'r, 'src>, ParseError> {
        let mut given: Vec<Given<'r>> = Vec::with_capacity(flags.len());
        for flag in flags {
            let err = |kind| ParseError::new(kind, flag.span);
            let word = text.get(&flag.text);
            let body = word.strip_prefix("--").unwrap_or(word);
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
            let range = match (kind, &flag.text) {
                (Kind::Value | Kind::List, &Text::Slice(_, end)) => Some((end - value.len(), end)),
                _ => None,
            };
            given.push(Given {
                name,
                value,
                range,
                span: flag.span,
            });
        }
        Ok(Flags { given, text })
    }

    /// The value of a single-valued flag, with its span.
    pub(crate) fn value(&self, name: &str) -> Option<(&'r str, Span)> {
        self.given
            .iter()
            .find(|g| g.name == name)
            .map(|g| (g.value, g.span))
    }

    /// The value of a single-valued flag for the AST; an empty value counts as not
    /// given, as in BuildKit (`--from=` copies from the context).
    pub(crate) fn string(&self, name: &str) -> Option<Cow<'src, str>> {
        self.given
            .iter()
            .find(|g| g.name == name && !g.value.is_empty())
            .map(|g| self.text_of(g))
    }

    /// A boolean flag: `None` when not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.value(name).map(|(v, _)| v == "true")
    }

    /// Every value of a list flag, in order, for the AST, with the value as written
    /// and its span.
    pub(crate) fn list(&self, name: &str) -> impl Iterator<Item = (Cow<'src, str>, &'r str, Span)> {
        self.given
            .iter()
            .filter(move |g| g.name == name)
            .map(|g| (self.text_of(g), g.value, g.span))
    }

    /// A flag's value for the AST: borrowed from the source when written there as is.
    fn text_of(&self, given: &Given<'r>) -> Cow<'src, str> {
        match given.range {
            Some((start, end)) => self.text.slice(start, end),
            None => Cow::Owned(given.value.to_owned()),
        }
    }
}
