//! Shell word expansion as BuildKit's Dockerfile frontend does it.
//!
//! Instructions such as `ENV`, `COPY`, `WORKDIR` or `FROM` expand `$VAR` references with
//! the build's ARG and ENV values before they are used. This module reproduces the
//! behaviour of BuildKit's `shell.Lex` (quotes, the escape character, `${v:-w}` and the
//! other modifiers, word splitting) so that a Dockerfile means the same thing to kiln as
//! to `docker build`. It is kept apart from the syntax layer because the solver calls it
//! late, once ARG values are known, and because it is held against BuildKit's behaviour
//! on its own, through the table files in `testdata/shell/`.
//!
//! The work is split in three parts:
//! - `env`: where variable values come from ([`Env`], implemented for maps and pair
//!   lists);
//! - `expand`: one pass over the input, a recursive descent in the shape of BuildKit's
//!   lexer so that its corner cases (what an escape means inside double quotes, which
//!   errors win) line up one for one;
//! - `pattern`: the glob patterns of `${v#p}`, `${v%p}` and `${v/p/r}`, matched by
//!   simulating an automaton, never by backtracking, so no pattern takes more than
//!   `O(len(value) × len(pattern))` steps per search.
//!
//! Where kiln deliberately differs from BuildKit:
//! - patterns understand bracket expressions (`[abc]`, `[a-z]`, `[!x]`, `[[:digit:]]`);
//!   BuildKit matches `[` literally. A `[` without a closing `]` is still literal;
//! - the replacement of `${v//p/r}` is inserted literally; BuildKit passes it through Go's
//!   regexp template expansion, so a `$0` reaching it would insert the match;
//! - under [`Lex::with_skip_unset_env`], an unset `${v//p/r}` is given back with both
//!   slashes (BuildKit drops one, turning it into `${v/p/r}`);
//! - `${name` cut short by the end of input reports a missing `}` (BuildKit reports an
//!   unsupported modifier);
//! - a `%`/`%%` pattern is read forwards like a `#` one, so a trailing `\` is an error
//!   there too and errors quote the pattern as written (BuildKit reverses the pattern
//!   text first, which turns `*\` into an escaped `*` and shows the reversed text);
//! - `${…}` may nest at most [`MAX_NESTING`] deep, so hostile input cannot exhaust the
//!   stack.
//!
//! As in BuildKit, the pattern escape is always `\`, whatever the Dockerfile's escape
//! character is, and `*` and `?` in patterns do not match a newline.

mod env;
mod expand;
mod pattern;

use std::collections::BTreeSet;

pub use env::Env;
pub use pattern::PatternError;

/// How deep `${…}` expansions may nest inside one another.
pub const MAX_NESTING: usize = 64;

/// A word lexer and expander, configured as BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lex {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

/// The outcome of expanding one word, with the variables it looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Names looked up and found in the environment (set, possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded. Every variant carries `offset`, the byte offset in
/// the input where the offending construct starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A `'` with no closing `'`.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote {
        /// Where the opening quote is.
        offset: usize,
    },
    /// A `"` with no closing `"`.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote {
        /// Where the opening quote is.
        offset: usize,
    },
    /// A `${` with no closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace {
        /// Where the `$` of the unclosed `${` is.
        offset: usize,
    },
    /// A `${v/pattern` with no `/` ending the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash {
        /// Where the `$` of the substitution is.
        offset: usize,
    },
    /// `${}`, `${{…`, `${:…`: a substitution without a name.
    #[error("syntax error: bad substitution")]
    BadSubstitution {
        /// Where the `$` of the substitution is.
        offset: usize,
    },
    /// A character after the name in `${name…}` that is no known modifier.
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// Where the modifier starts.
        offset: usize,
        /// The modifier as written (`=`, `:x`, …).
        modifier: String,
    },
    /// `${v?msg}` with `v` unset, or `${v:?msg}` with `v` unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// Where the `$` of the substitution is.
        offset: usize,
        /// The variable's name.
        name: String,
        /// The word after `?`, or a default message when it is empty.
        message: String,
    },
    /// The pattern of `${v#p}`, `${v%p}` or `${v/p/r}`, once expanded, is not a valid glob.
    #[error("invalid pattern ({pattern}) in substitution")]
    InvalidPattern {
        /// Where the `$` of the substitution is.
        offset: usize,
        /// The expanded pattern.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: PatternError,
    },
    /// `${…}` nested deeper than [`MAX_NESTING`].
    #[error("substitutions nested more than {limit} deep")]
    TooDeep {
        /// Where the `$` of the substitution past the limit is.
        offset: usize,
        /// The limit, [`MAX_NESTING`].
        limit: usize,
    },
}

impl ShellError {
    /// The byte offset in the input where the problem is.
    pub fn offset(&self) -> usize {
        match self {
            ShellError::UnterminatedSingleQuote { offset }
            | ShellError::UnterminatedDoubleQuote { offset }
            | ShellError::MissingBrace { offset }
            | ShellError::MissingSlash { offset }
            | ShellError::BadSubstitution { offset }
            | ShellError::UnsupportedModifier { offset, .. }
            | ShellError::Required { offset, .. }
            | ShellError::InvalidPattern { offset, .. }
            | ShellError::TooDeep { offset, .. } => *offset,
        }
    }
}

impl Lex {
    /// A lexer using `escape` (`\`, or `` ` `` under `# escape=``) as escape character,
    /// with quotes and escapes removed and unset variables expanded to nothing.
    pub fn new(escape: char) -> Lex {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keeps quote characters in the result instead of removing them.
    pub fn with_raw_quotes(self, raw_quotes: bool) -> Lex {
        Lex { raw_quotes, ..self }
    }

    /// Keeps escape characters in the result instead of removing them.
    pub fn with_raw_escapes(self, raw_escapes: bool) -> Lex {
        Lex {
            raw_escapes,
            ..self
        }
    }

    /// Treats `'` and `"` as ordinary characters.
    pub fn with_skip_process_quotes(self, skip_process_quotes: bool) -> Lex {
        Lex {
            skip_process_quotes,
            ..self
        }
    }

    /// Leaves references to unset variables as written (`$v`, `${v:-w}`) instead of
    /// expanding them.
    pub fn with_skip_unset_env(self, skip_unset_env: bool) -> Lex {
        Lex {
            skip_unset_env,
            ..self
        }
    }

    /// Expands `input` into one word: quotes and escapes are removed, variables
    /// substituted, whitespace kept.
    pub fn process_word(&self, input: &str, env: &dyn Env) -> Result<String, ShellError> {
        Ok(self.process_word_with_matches(input, env)?.result)
    }

    /// Expands `input` and splits it into words at unquoted, unescaped whitespace, as
    /// BuildKit does for exec-form-less instructions (`ARG a b`, `COPY a b c`).
    ///
    /// Whitespace coming from a variable's value splits too; a word that ends up empty
    /// (`""`, an empty variable) vanishes.
    pub fn process_words(&self, input: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        let mut words = expand::Words::default();
        expand::Expander::new(self, input, env).run(Some(&mut words))?;
        Ok(words.finish())
    }

    /// Expands `input` into one word and reports which variables it looked up, so that a
    /// build argument changes a step's cache key only where it is used.
    pub fn process_word_with_matches(
        &self,
        input: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ShellError> {
        expand::Expander::new(self, input, env).run(None)
    }
}
