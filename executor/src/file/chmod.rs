//! `--chmod` modes: octal, or symbolic as chmod(1) writes them (`u+x,g-w,o=r`, `a+X`,
//! `g=u`, `+t`).
//!
//! Symbolic clauses are applied in order to each file's source mode, with chmod(1)'s
//! rules: `X` adds execute permission only to directories and to files that already
//! have some execute bit, `s` and `t` act on the set-id and sticky bits of the classes
//! named, and `u`/`g`/`o` after an operator copy that class's current bits. One
//! difference: with no class letter, chmod(1) leaves the bits set in its umask alone; a
//! build must not depend on the umask of the process running it, so here a missing
//! class means `a`.
//!
//! An octal mode sets the permission bits, as BuildKit does: the source's set-id and
//! sticky bits survive `--chmod=755`; special bits written in the mode (`4755`) are
//! added.

use std::fmt;
use std::str::FromStr;

const SET_ID: u32 = 0o6000;
const STICKY: u32 = 0o1000;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;
const ALL: u32 = 0o7777;

/// A mode given to `COPY --chmod` / `ADD --chmod`, applied to every copied file and
/// directory. Built with [`str::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    spec: String,
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Octal(u32),
    Symbolic(Vec<Change>),
}

/// One operator of a symbolic clause, with the classes it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    /// Bits of the classes named (0 when no class was named: all of them).
    who: u32,
    op: Op,
    /// Permission bits named (before masking by `who`).
    bits: u32,
    /// `X`: execute bits too, for directories and files already executable by someone.
    exec_if_any: bool,
    /// `u`, `g` or `o` after the operator: copy that class's current bits.
    copy_from: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

/// Why a `--chmod` value is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    /// The value is empty.
    #[error("mode is empty")]
    Empty,
    /// An octal mode above `7777`.
    #[error("octal mode {spec:?} is out of range (at most 7777)")]
    OutOfRange {
        /// The value as given.
        spec: String,
    },
    /// A character that has no place where it stands.
    #[error("invalid mode {spec:?}: unexpected {found:?} at position {at}")]
    Unexpected {
        /// The value as given.
        spec: String,
        /// The character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// A clause that names classes but no operator (`u`), or an empty clause (`u+x,`).
    #[error("invalid mode {spec:?}: clause {clause:?} has no operator (+, - or =)")]
    MissingOperator {
        /// The value as given.
        spec: String,
        /// The clause.
        clause: String,
    },
}

impl FromStr for Chmod {
    type Err = ChmodError;

    fn from_str(spec: &str) -> Result<Chmod, ChmodError> {
        if spec.is_empty() {
            return Err(ChmodError::Empty);
        }
        let repr = if spec.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(at) = spec.find(['8', '9']) {
                return Err(ChmodError::Unexpected {
                    spec: spec.to_owned(),
                    found: char::from(spec.as_bytes()[at]),
                    at,
                });
            }
            match u32::from_str_radix(spec, 8) {
                Ok(mode) if mode <= ALL => Repr::Octal(mode),
                _ => {
                    return Err(ChmodError::OutOfRange {
                        spec: spec.to_owned(),
                    });
                }
            }
        } else {
            Repr::Symbolic(parse_symbolic(spec)?)
        };
        Ok(Chmod {
            spec: spec.to_owned(),
            repr,
        })
    }
}

fn parse_symbolic(spec: &str) -> Result<Vec<Change>, ChmodError> {
    let mut changes = Vec::new();
    let mut offset = 0;
    for clause in spec.split(',') {
        let unexpected = |i: usize, found: char| ChmodError::Unexpected {
            spec: spec.to_owned(),
            found,
            at: offset + i,
        };
        let mut chars = clause.char_indices().peekable();
        let mut who = 0;
        while let Some(&(_, c)) = chars.peek() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => ALL,
                _ => break,
            };
            chars.next();
        }
        let mut ops = 0;
        while let Some((i, c)) = chars.next() {
            let op = match c {
                '+' => Op::Add,
                '-' => Op::Remove,
                '=' => Op::Set,
                other => return Err(unexpected(i, other)),
            };
            let mut change = Change {
                who,
                op,
                bits: 0,
                exec_if_any: false,
                copy_from: None,
            };
            if let Some(&(_, c @ ('u' | 'g' | 'o'))) = chars.peek() {
                chars.next();
                change.copy_from = Some(match c {
                    'u' => 0o700,
                    'g' => 0o070,
                    _ => 0o007,
                });
            } else {
                while let Some(&(i, c)) = chars.peek() {
                    change.bits |= match c {
                        'r' => READ,
                        'w' => WRITE,
                        'x' => EXEC,
                        's' => SET_ID,
                        't' => STICKY,
                        'X' => {
                            change.exec_if_any = true;
                            0
                        }
                        '+' | '-' | '=' => break,
                        other => return Err(unexpected(i, other)),
                    };
                    chars.next();
                }
            }
            changes.push(change);
            ops += 1;
        }
        if ops == 0 {
            return Err(ChmodError::MissingOperator {
                spec: spec.to_owned(),
                clause: clause.to_owned(),
            });
        }
        offset += clause.len() + 1;
    }
    Ok(changes)
}

impl Chmod {
    /// The mode a file or directory whose source mode is `mode` gets (permission bits
    /// only: the result is within `0o7777`).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mode = mode & ALL;
        match &self.repr {
            Repr::Octal(value) => (mode & (SET_ID | STICKY)) | value,
            Repr::Symbolic(changes) => changes
                .iter()
                .fold(mode, |mode, change| change.apply(mode, is_dir)),
        }
    }
}

impl Change {
    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut value = self.bits;
        if let Some(class) = self.copy_from {
            let current = mode & class;
            let spread = |bits: u32| if current & bits != 0 { bits } else { 0 };
            value = spread(READ) | spread(WRITE) | spread(EXEC);
        }
        if self.exec_if_any && (is_dir || mode & EXEC != 0) {
            value |= EXEC;
        }
        let who = if self.who == 0 { ALL } else { self.who };
        value &= who;
        match self.op {
            Op::Add => mode | value,
            Op::Remove => mode & !value,
            Op::Set => (mode & !who) | value,
        }
    }
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, is_dir: bool) -> u32 {
        spec.parse::<Chmod>().unwrap().apply(mode, is_dir)
    }

    #[test]
    fn modes_apply_as_chmod_does() {
        // spec, source mode, is a directory, expected
        let table: &[(&str, u32, bool, u32)] = &[
            ("755", 0o644, false, 0o755),
            ("0600", 0o777, true, 0o600),
            ("755", 0o4711, false, 0o4755),
            ("4755", 0o644, false, 0o4755),
            ("u+x", 0o644, false, 0o744),
            ("u+x,g-w,o=r", 0o666, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a+X", 0o644, false, 0o644),
            ("a+X", 0o744, false, 0o755),
            ("a+X", 0o600, true, 0o711),
            ("a+rX", 0o600, false, 0o644),
            ("go=", 0o777, false, 0o700),
            ("=r", 0o4777, false, 0o444),
            ("u=rwx,go=rx", 0o000, true, 0o755),
            ("g=u", 0o640, false, 0o660),
            ("o=g", 0o750, false, 0o755),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+s", 0o755, false, 0o6755),
            ("o+t", 0o777, true, 0o1777),
            ("u+t", 0o777, true, 0o777),
            ("u-s,g-s", 0o6755, false, 0o755),
            ("u+x-w", 0o644, false, 0o544),
            ("ug+w,o-rwx", 0o444, false, 0o660),
            ("a-x,u+x", 0o777, false, 0o766),
        ];
        for &(spec, mode, is_dir, want) in table {
            assert_eq!(
                apply(spec, mode, is_dir),
                want,
                "{spec} on {mode:o} (dir: {is_dir}): got {:o}, want {want:o}",
                apply(spec, mode, is_dir)
            );
        }
    }

    #[test]
    fn bad_modes_are_refused() {
        assert_eq!("".parse::<Chmod>(), Err(ChmodError::Empty));
        assert!(matches!(
            "17777".parse::<Chmod>(),
            Err(ChmodError::OutOfRange { .. })
        ));
        assert!(matches!(
            "u+q".parse::<Chmod>(),
            Err(ChmodError::Unexpected {
                found: 'q',
                at: 2,
                ..
            })
        ));
        assert!(matches!(
            "u+x,g-y".parse::<Chmod>(),
            Err(ChmodError::Unexpected {
                found: 'y',
                at: 6,
                ..
            })
        ));
        assert!(matches!(
            "u".parse::<Chmod>(),
            Err(ChmodError::MissingOperator { .. })
        ));
        assert!(matches!(
            "u+x,".parse::<Chmod>(),
            Err(ChmodError::MissingOperator { .. })
        ));
        assert!(matches!(
            "758".parse::<Chmod>(),
            Err(ChmodError::Unexpected {
                found: '8',
                at: 2,
                ..
            })
        ));
        assert_eq!("a+X".parse::<Chmod>().unwrap().to_string(), "a+X");
    }
}
