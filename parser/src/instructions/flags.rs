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

/// The flags any instruction declares. A flag word's name is matched once, against
/// them all, and what the typed layer asks for is then compared as a small integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    Platform,
    Mount,
    Network,
    Security,
    Exclude,
    Parents,
    Chown,
    From,
    Chmod,
    Link,
    KeepGitDir,
    Checksum,
    Unpack,
    Interval,
    Timeout,
    StartPeriod,
    StartInterval,
    Retries,
}

impl Name {
    /// The flag named `name` (dashes removed), if any instruction declares it.
    fn of(name: &str) -> Option<Name> {
        Some(match name {
            "platform" => Name::Platform,
            "mount" => Name::Mount,
            "network" => Name::Network,
            "security" => Name::Security,
            "exclude" => Name::Exclude,
            "parents" => Name::Parents,
            "chown" => Name::Chown,
            "from" => Name::From,
            "chmod" => Name::Chmod,
            "link" => Name::Link,
            "keep-git-dir" => Name::KeepGitDir,
            "checksum" => Name::Checksum,
            "unpack" => Name::Unpack,
            "interval" => Name::Interval,
            "timeout" => Name::Timeout,
            "start-period" => Name::StartPeriod,
            "start-interval" => Name::StartInterval,
            "retries" => Name::Retries,
            _ => return None,
        })
    }

    /// The name as written, without dashes.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Name::Platform => "platform",
            Name::Mount => "mount",
            Name::Network => "network",
            Name::Security => "security",
            Name::Exclude => "exclude",
            Name::Parents => "parents",
            Name::Chown => "chown",
            Name::From => "from",
            Name::Chmod => "chmod",
            Name::Link => "link",
            Name::KeepGitDir => "keep-git-dir",
            Name::Checksum => "checksum",
            Name::Unpack => "unpack",
            Name::Interval => "interval",
            Name::Timeout => "timeout",
            Name::StartPeriod => "start-period",
            Name::StartInterval => "start-interval",
            Name::Retries => "retries",
        }
    }
}

/// A flag given on the instruction, once checked: which declared flag it is, and its
/// value. The typed layer keeps these in a vector of the raw node, reused from one
/// instruction to the next.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Given {
    /// Its index in the declaration.
    declared: usize,
    /// Its index in the node's flags.
    flag: usize,
    value: Value,
}

/// A given flag's value.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// A boolean flag's.
    Bool(bool),
    /// Where the value starts in the flag word.
    At(usize),
}

/// The flags of one instruction, validated against its declaration.
pub(crate) struct Flags<'r, 'src> {
    declared: &'r [(Name, Kind)],
    flags: &'r [RawFlag],
    given: &'r [Given],
    text: LineText<'r, 'src>,
}

/// The name and the value of a flag word (`--name[=value]`), the value as its offset.
fn name_value(word: &str) -> (&str, Option<usize>) {
    let body = word.strip_prefix("--").unwrap_or(word);
    let at = word.len() - body.len();
    match body.bytes().position(|b| b == b'=') {
        Some(eq) => (&body[..eq], Some(at + eq + 1)),
        None => (body, None),
    }
}

/// Checks that an instruction that takes no flag was given none.
pub(crate) fn none(
    instruction: &'static str,
    flags: &[RawFlag],
    text: LineText<'_, '_>,
) -> Result<(), ParseError> {
    match flags.first() {
        None => Ok(()),
        Some(flag) => Err(ParseError::new(
            ErrorKind::UnknownFlag {
                instruction,
                flag: name_value(text.get(&flag.text)).0.to_owned(),
            },
            flag.span,
        )),
    }
}

impl<'r, 'src> Flags<'r, 'src> {
    /// Checks `flags`, cut from the logical line `text`, against the declared
    /// `(name, kind)` pairs, noting what was given in `given`.
    pub(crate) fn parse(
        instruction: &'static str,
        flags: &'r [RawFlag],
        given: &'r mut Vec<Given>,
        text: LineText<'r, 'src>,
        declared: &'r [(Name, Kind)],
    ) -> Result<Flags<'r, 'src>, ParseError> {
        given.clear();
        for (index, flag) in flags.iter().enumerate() {
            let err = |kind| ParseError::new(kind, flag.span);
            let word = text.get(&flag.text);
            let (name, value_at) = name_value(word);
            let Some(at) =
                Name::of(name).and_then(|name| declared.iter().position(|(n, _)| *n == name))
            else {
                return Err(err(ErrorKind::UnknownFlag {
                    instruction,
                    flag: name.to_owned(),
                }));
            };
            let (name, kind) = declared[at];
            let name = name.as_str();
            if kind != Kind::List && given.iter().any(|g| g.declared == at) {
                return Err(err(ErrorKind::DuplicateFlag {
                    flag: name.to_owned(),
                }));
            }
            let value = match (kind, value_at.map(|i| &word[i..])) {
                (Kind::Bool, None) => Value::Bool(true),
                (Kind::Bool, Some(v)) => match v {
                    _ if v.eq_ignore_ascii_case("true") => Value::Bool(true),
                    _ if v.eq_ignore_ascii_case("false") => Value::Bool(false),
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
                (_, Some(_)) => Value::At(value_at.unwrap_or_default()),
            };
            given.push(Given {
                declared: at,
                flag: index,
                value,
            });
        }
        Ok(Flags {
            declared,
            flags,
            given,
            text,
        })
    }

    /// The flags given as `name`, in order.
    fn named(&self, name: Name) -> impl Iterator<Item = &Given> {
        self.given
            .iter()
            .filter(move |g| self.declared[g.declared].0 == name)
    }

    /// A given flag's value as written (`true` or `false` for a boolean flag).
    fn value_of(&self, given: &Given) -> &'r str {
        match given.value {
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::At(at) => &self.text.get(&self.flags[given.flag].text)[at..],
        }
    }

    /// A given flag's value for the AST: borrowed from the source when written there
    /// as is.
    fn text_of(&self, given: &Given) -> Cow<'src, str> {
        match (&self.flags[given.flag].text, given.value) {
            (&Text::Slice(start, end), Value::At(at)) => self.text.slice(start + at, end),
            _ => Cow::Owned(self.value_of(given).to_owned()),
        }
    }

    /// The value of a single-valued flag, with its span.
    pub(crate) fn value(&self, name: Name) -> Option<(&'r str, Span)> {
        self.named(name)
            .next()
            .map(|g| (self.value_of(g), self.flags[g.flag].span))
    }

    /// The value of a single-valued flag for the AST; an empty value counts as not
    /// given, as in BuildKit (`--from=` copies from the context).
    pub(crate) fn string(&self, name: Name) -> Option<Cow<'src, str>> {
        self.named(name)
            .next()
            .filter(|g| !self.value_of(g).is_empty())
            .map(|g| self.text_of(g))
    }

    /// A boolean flag: `None` when not given.
    pub(crate) fn bool(&self, name: Name) -> Option<bool> {
        self.value(name).map(|(v, _)| v == "true")
    }

    /// Every value of a list flag, in order, for the AST, with the value as written
    /// and its span.
    pub(crate) fn list(&self, name: Name) -> impl Iterator<Item = (Cow<'src, str>, &'r str, Span)> {
        self.named(name)
            .map(|g| (self.text_of(g), self.value_of(g), self.flags[g.flag].span))
    }
}
