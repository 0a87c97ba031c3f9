//! `COPY/ADD --chmod` values: an octal mode up to `7777`, or a symbolic mode as
//! chmod(1) writes it (`u+x`, `go-w,a+rX`, `u=g`).
//!
//! The value may hold build variables (`--chmod=$MODE`), which are only known once the
//! solver expands them; such values reach the AST as [`Expandable::Deferred`] and the
//! solver parses them with [`Chmod::from_str`] after expansion.
//!
//! [`Expandable::Deferred`]: crate::instructions::Expandable::Deferred

use std::str::FromStr;

use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::take_while;
use nom::character::complete::{char, one_of};
use nom::combinator::{all_consuming, value};
use nom::multi::{many1, separated_list1};
use serde::Serialize;

/// A validated `--chmod` value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chmod {
    /// An octal mode (`0755`).
    Octal(u32),
    /// A symbolic mode (`u+x,go-w`), kept as written.
    Symbolic(String),
}

/// Why a `--chmod` value is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    /// Neither an octal number up to 7777 nor a symbolic mode.
    #[error(
        "invalid chmod parameter: {value:?}; it should be an octal mode up to 7777 or a symbolic mode such as u+x"
    )]
    Invalid {
        /// The value given.
        value: String,
    },
}

/// One symbolic clause: `[ugoa]*` then one or more `[-+=]([rwxXst]*|[ugo])`.
fn clause(input: &str) -> nom::IResult<&str, ()> {
    let action = (
        one_of("+-="),
        alt((
            value((), one_of("ugo")),
            value((), take_while(|c| "rwxXst".contains(c))),
        )),
    );
    value((), (take_while(|c| "ugoa".contains(c)), many1(action))).parse(input)
}

fn symbolic(input: &str) -> bool {
    all_consuming(separated_list1(char(','), clause))
        .parse(input)
        .is_ok()
}

impl FromStr for Chmod {
    type Err = ChmodError;

    fn from_str(s: &str) -> Result<Chmod, ChmodError> {
        let invalid = || ChmodError::Invalid {
            value: s.to_owned(),
        };
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(s, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(Chmod::Octal(mode)),
                _ => Err(invalid()),
            };
        }
        if symbolic(s) {
            return Ok(Chmod::Symbolic(s.to_owned()));
        }
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!("0755".parse(), Ok(Chmod::Octal(0o755)));
        assert_eq!("7777".parse(), Ok(Chmod::Octal(0o7777)));
        for ok in ["u+x", "go-w,a+rX", "u=g", "=r", "a+rwx-w", "+t"] {
            assert_eq!(ok.parse(), Ok(Chmod::Symbolic(ok.into())), "{ok}");
        }
        for bad in [
            "", "10000", "0o755", "8", "-755", "u", "u+z", "u+x,", ",u+x", "u+x,,g+w", "u+gx",
        ] {
            assert!(bad.parse::<Chmod>().is_err(), "{bad}");
        }
    }
}
