//! One pass over a word: quotes, escapes, `$` substitutions and word splitting.
//!
//! The functions mirror the structure of BuildKit's lexer (a word read up to a stop
//! character, single quotes, double quotes, `$`), because its corner cases live in that
//! structure: which characters an escape keeps inside double quotes, that the words of a
//! `${v:-w}` default are split again, that an error met at the end of input inside
//! `${…}` is reported as a missing `}`. Keeping the same shape keeps those cases right.
//!
//! Positions are byte offsets into the input; names are slices of it, so looking a
//! variable up allocates only the first time a name is recorded.

use std::collections::BTreeSet;

use unicode_general_category::{GeneralCategory, get_general_category};

use super::pattern::Pattern;
use super::{Env, Expansion, Lex, MAX_NESTING, ShellError};

/// The expansion of one input.
pub(crate) struct Expander<'a> {
    lex: &'a Lex,
    input: &'a str,
    pos: usize,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
}

/// Splits the expanded text into words as it is produced.
#[derive(Debug, Default)]
pub(crate) struct Words {
    done: Vec<String>,
    word: String,
    in_word: bool,
}

impl Words {
    /// Adds a character subject to splitting: whitespace ends the current word.
    fn push_splitting(&mut self, c: char) {
        if !c.is_whitespace() {
            self.push_kept(c);
        } else if self.in_word && !self.word.is_empty() {
            self.done.push(std::mem::take(&mut self.word));
            self.in_word = false;
        }
    }

    /// Adds a quoted or escaped character, which never splits.
    fn push_kept(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn push_str_splitting(&mut self, s: &str) {
        let mut rest = s;
        while let Some((at, space)) = rest.char_indices().find(|(_, c)| c.is_whitespace()) {
            if at > 0 {
                self.push_str_kept(&rest[..at]);
            }
            self.push_splitting(space);
            rest = &rest[at + space.len_utf8()..];
        }
        if !rest.is_empty() {
            self.push_str_kept(rest);
        }
    }

    fn push_str_kept(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    /// The words, the empty ones left out.
    pub(crate) fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.done.push(self.word);
        }
        self.done
    }
}

/// How a word read up to a stop character ended.
enum Ended {
    /// At the stop character, which was consumed.
    Stopped,
    /// At the end of input.
    Exhausted,
}

impl<'a> Expander<'a> {
    pub(crate) fn new(lex: &'a Lex, input: &'a str, env: &'a dyn Env) -> Expander<'a> {
        Expander {
            lex,
            input,
            pos: 0,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        }
    }

    /// Expands the whole input, feeding `words` when word splitting is wanted.
    pub(crate) fn run(mut self, words: Option<&mut Words>) -> Result<Expansion, ShellError> {
        let raw_escapes = self.lex.raw_escapes;
        let (result, _) = self.word_until(None, raw_escapes, words)?;
        Ok(Expansion {
            result,
            matched: self.matched,
            unmatched: self.unmatched,
        })
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Consumes the characters up to the next one for which `special` holds (or the end),
    /// at least one, and returns them.
    fn take_run(&mut self, special: impl Fn(char) -> bool) -> &'a str {
        let rest = &self.input[self.pos..];
        let first = rest.chars().next().map_or(0, char::len_utf8);
        let len = rest[first..]
            .char_indices()
            .find(|&(_, c)| special(c))
            .map_or(rest.len(), |(at, _)| first + at);
        self.pos += len;
        &rest[..len]
    }

    fn at_end(&self) -> bool {
        self.pos == self.input.len()
    }

    /// Reads a word up to `stop`, or to the end of input.
    fn word_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        mut words: Option<&mut Words>,
    ) -> Result<(String, Ended), ShellError> {
        let mut result = String::new();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.bump();
                return Ok((result, Ended::Stopped));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    if let Some(words) = words.as_deref_mut() {
                        words.push_str_splitting(&value);
                    }
                    result.push_str(&value);
                }
                '\'' if quotes => {
                    let value = self.single_quoted()?;
                    if let Some(words) = words.as_deref_mut() {
                        words.push_str_kept(&value);
                    }
                    result.push_str(&value);
                }
                '"' if quotes => {
                    let value = self.double_quoted(raw_escapes)?;
                    if let Some(words) = words.as_deref_mut() {
                        words.push_str_kept(&value);
                    }
                    result.push_str(&value);
                }
                c if c == self.lex.escape => {
                    self.bump();
                    if raw_escapes {
                        if let Some(words) = words.as_deref_mut() {
                            words.push_kept(c);
                        }
                        result.push(c);
                    }
                    // An escape at the very end escapes nothing and vanishes.
                    let Some(escaped) = self.bump() else { break };
                    if let Some(words) = words.as_deref_mut() {
                        words.push_kept(escaped);
                    }
                    result.push(escaped);
                }
                _ => {
                    let escape = self.lex.escape;
                    let run = self.take_run(|c| {
                        Some(c) == stop
                            || c == '$'
                            || c == escape
                            || (quotes && (c == '\'' || c == '"'))
                    });
                    if let Some(words) = words.as_deref_mut() {
                        words.push_str_splitting(run);
                    }
                    result.push_str(run);
                }
            }
        }
        Ok((result, Ended::Exhausted))
    }

    /// `'…'`: everything literal up to the next `'`; nothing escapes it.
    fn single_quoted(&mut self) -> Result<String, ShellError> {
        let open = self.pos;
        self.bump();
        let mut result = String::new();
        if self.lex.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.bump() {
                None => return Err(ShellError::UnterminatedSingleQuote { offset: open }),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// `"…"`: `$` still expands; the escape character escapes only `"`, `$` and itself
    /// and is kept before anything else.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        let open = self.pos;
        self.bump();
        let mut result = String::new();
        if self.lex.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote { offset: open }),
                Some('"') => {
                    self.bump();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(c) if c == self.lex.escape => {
                    self.bump();
                    if raw_escapes {
                        result.push(c);
                    }
                    match self.peek() {
                        // The unterminated quote is reported on the next turn.
                        None => {}
                        Some(next) if next == '"' || next == '$' || next == c => {
                            self.bump();
                            result.push(next);
                        }
                        Some(_) => result.push(c),
                    }
                }
                Some(_) => {
                    let escape = self.lex.escape;
                    let run = self.take_run(|c| c == '"' || c == '$' || c == escape);
                    result.push_str(run);
                }
            }
        }
    }

    /// `$name`, `${name}` or `${name<modifier>…}`, at the `$`.
    fn dollar(&mut self) -> Result<String, ShellError> {
        let dollar = self.pos;
        self.bump();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(name) {
                Some(value) => value.to_owned(),
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump();
        match self.peek() {
            None => return Err(ShellError::MissingBrace { offset: dollar }),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution { offset: dollar }),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep {
                offset: dollar,
                limit: MAX_NESTING,
            });
        }
        self.depth += 1;
        let expanded = self.braced(dollar);
        self.depth -= 1;
        expanded
    }

    /// The rest of `${…}`, after the `{`.
    fn braced(&mut self, dollar: usize) -> Result<String, ShellError> {
        let name = self.name();
        let modifier_at = self.pos;
        match self.bump() {
            None => Err(ShellError::MissingBrace { offset: dollar }),
            Some('}') => Ok(match self.lookup(name) {
                Some(value) => value.to_owned(),
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let op = self.bump();
                let written = &self.input[modifier_at..self.pos];
                let modifier = Modifier {
                    dollar,
                    at: modifier_at,
                    written,
                    op,
                    null_is_unset: true,
                };
                self.modified(name, modifier)
            }
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => {
                let written = &self.input[modifier_at..self.pos];
                let modifier = Modifier {
                    dollar,
                    at: modifier_at,
                    written,
                    op: Some(op),
                    null_is_unset: false,
                };
                self.modified(name, modifier)
            }
            Some('/') => self.substituted(dollar, name),
            Some(other) => Err(ShellError::UnsupportedModifier {
                offset: modifier_at,
                modifier: other.to_string(),
            }),
        }
    }

    /// The word of a modifier, up to `stop`, with BuildKit's error mapping: running out
    /// of input, or failing once there, means the closing character is missing.
    fn modifier_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: ShellError,
    ) -> Result<String, ShellError> {
        match self.word_until(Some(stop), raw_escapes, None) {
            Ok((word, Ended::Stopped)) => Ok(word),
            Ok((_, Ended::Exhausted)) => Err(missing),
            Err(_) if self.at_end() => Err(missing),
            Err(err) => Err(err),
        }
    }

    /// `${name-w}`, `${name:+w}`, `${name#p}` and the others of that form.
    fn modified(&mut self, name: &'a str, modifier: Modifier<'a>) -> Result<String, ShellError> {
        let pattern_op = matches!(modifier.op, Some('#' | '%'));
        let missing = ShellError::MissingBrace {
            offset: modifier.dollar,
        };
        let word = self.modifier_word('}', pattern_op, missing)?;
        let value = self.lookup(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{}{word}}}", modifier.written));
        }
        let absent = match value {
            None => true,
            Some(value) => modifier.null_is_unset && value.is_empty(),
        };
        match modifier.op {
            Some('-') if absent => Ok(word),
            Some('-') => Ok(value.unwrap_or_default().to_owned()),
            Some('+') if absent => Ok(String::new()),
            Some('+') => Ok(word),
            Some('?') if absent => {
                let message = if !word.is_empty() {
                    word
                } else if value.is_none() {
                    "is not allowed to be unset".to_owned()
                } else {
                    "is not allowed to be empty".to_owned()
                };
                Err(ShellError::Required {
                    offset: modifier.dollar,
                    name: name.to_owned(),
                    message,
                })
            }
            Some('?') => Ok(value.unwrap_or_default().to_owned()),
            Some(op @ ('#' | '%')) => {
                let (longest, text) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pattern = compile(text, modifier.dollar)?;
                let value = value.unwrap_or_default();
                Ok(if op == '#' {
                    pattern.strip_prefix(value, longest)
                } else {
                    pattern.strip_suffix(value, longest)
                }
                .to_owned())
            }
            _ => Err(ShellError::UnsupportedModifier {
                offset: modifier.at,
                modifier: modifier.written.to_owned(),
            }),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, after the first
    /// `/`.
    fn substituted(&mut self, dollar: usize, name: &'a str) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.bump();
        }
        let pattern = self.modifier_word('/', true, ShellError::MissingSlash { offset: dollar })?;
        let missing = ShellError::MissingBrace { offset: dollar };
        let replacement = self.modifier_word('}', true, missing)?;
        let value = self.lookup(name);
        if self.lex.skip_unset_env && value.is_none() {
            let slashes = if all { "//" } else { "/" };
            return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
        }
        let compiled = compile(&pattern, dollar)?;
        Ok(compiled.replace(value.unwrap_or_default(), &replacement, all))
    }

    /// A variable name: a run of digits, one special parameter character, or letters,
    /// digits and `_`. Empty when none of these follows.
    fn name(&mut self) -> &'a str {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_digit(c) => {
                while self.peek().is_some_and(is_digit) {
                    self.bump();
                }
            }
            Some('@' | '*' | '#' | '?' | '-' | '$' | '!') => {
                self.bump();
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| c == '_' || is_letter(c) || is_digit(c))
                {
                    self.bump();
                }
            }
        }
        &self.input[start..self.pos]
    }

    /// Looks `name` up and records whether it was found.
    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        let value = self.env.get(name);
        let seen = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !seen.contains(name) {
            seen.insert(name.to_owned());
        }
        value
    }
}

/// What follows the name in `${name<modifier>word}`.
struct Modifier<'a> {
    /// Where the `$` is.
    dollar: usize,
    /// Where the modifier starts.
    at: usize,
    /// The modifier as written: `-`, `:-`, `:x`, ….
    written: &'a str,
    /// The operator character, after the `:` if there is one.
    op: Option<char>,
    /// Whether a `:` makes an empty value count as unset.
    null_is_unset: bool,
}

fn compile(text: &str, dollar: usize) -> Result<Pattern, ShellError> {
    Pattern::parse(text).map_err(|source| ShellError::InvalidPattern {
        offset: dollar,
        pattern: text.to_owned(),
        source,
    })
}

/// Go's `unicode.IsLetter`: general category L.
fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (!c.is_ascii()
            && matches!(
                get_general_category(c),
                GeneralCategory::UppercaseLetter
                    | GeneralCategory::LowercaseLetter
                    | GeneralCategory::TitlecaseLetter
                    | GeneralCategory::ModifierLetter
                    | GeneralCategory::OtherLetter
            ))
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
        || (!c.is_ascii() && get_general_category(c) == GeneralCategory::DecimalNumber)
}
