//! Glob patterns for `${v#p}`, `${v%p}` and `${v/p/r}`.
//!
//! A pattern is compiled to a flat list of tokens (a literal, `?`, `*`, a bracket
//! expression) and matched by simulating the automaton those tokens spell: the set of
//! live positions in the token list is advanced one character of the value at a time.
//! That bounds every search by `O(len(value) × len(pattern))` whatever the pattern, where
//! a backtracking matcher would go exponential on `*a*a*a*…b`.
//!
//! Suffix removal runs the same automaton over the reversed token list and the value read
//! backwards, so "shortest suffix" becomes "shortest prefix" without rewriting the
//! pattern text. Substitution looks for the leftmost match and, from that start, the
//! longest one, threads keeping the earliest start that reached each position.
//!
//! Escapes follow BuildKit: `\` makes `*`, `?`, `\` (and here `[`, `]`) literal, is
//! dropped before `}` and `/` (which had to be escaped to get into the pattern at all),
//! and is an error before anything else. `*` and `?` do not match a newline, because
//! BuildKit's translation to Go regular expressions gives them that meaning.

/// Why a pattern cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `\` before a character it cannot escape.
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    /// `\` as the last character of the pattern.
    #[error("escape at end of pattern")]
    TrailingEscape,
    /// `[[:name:]]` with a class name POSIX does not define.
    #[error("unknown character class [:{0}:]")]
    UnknownClass(String),
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
    Bracket(Bracket),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Bracket {
    negated: bool,
    items: Vec<BracketItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BracketItem {
    Char(char),
    Range(char, char),
    Class(CharClass),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

impl Pattern {
    /// Compiles the (already expanded) pattern text of a substitution.
    pub(crate) fn parse(text: &str) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let token = match chars[i] {
                '*' => {
                    i += 1;
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => {
                    i += 1;
                    Token::AnyChar
                }
                '\\' => {
                    let escaped = *chars.get(i + 1).ok_or(PatternError::TrailingEscape)?;
                    if !matches!(escaped, '*' | '?' | '\\' | '[' | ']' | '}' | '/') {
                        return Err(PatternError::InvalidEscape(escaped));
                    }
                    i += 2;
                    Token::Literal(escaped)
                }
                '[' => match parse_bracket(&chars[i + 1..])? {
                    Some((bracket, used)) => {
                        i += 1 + used;
                        Token::Bracket(bracket)
                    }
                    None => {
                        i += 1;
                        Token::Literal('[')
                    }
                },
                c => {
                    i += 1;
                    Token::Literal(c)
                }
            };
            tokens.push(token);
        }
        Ok(Pattern { tokens })
    }

    /// `value` without its shortest (or, with `longest`, longest) prefix matching the
    /// pattern; `value` itself when no prefix matches.
    pub(crate) fn strip_prefix<'v>(&self, value: &'v str, longest: bool) -> &'v str {
        let boundaries = value.char_indices().map(|(at, c)| (c, at + c.len_utf8()));
        match self.anchored_match(Direction::Forward, 0, boundaries, longest) {
            Some(end) => &value[end..],
            None => value,
        }
    }

    /// `value` without its shortest (or, with `longest`, longest) suffix matching the
    /// pattern; `value` itself when no suffix matches.
    pub(crate) fn strip_suffix<'v>(&self, value: &'v str, longest: bool) -> &'v str {
        let boundaries = value.char_indices().rev().map(|(at, c)| (c, at));
        match self.anchored_match(Direction::Backward, value.len(), boundaries, longest) {
            Some(start) => &value[..start],
            None => value,
        }
    }

    /// `value` with the leftmost-longest match (or, with `all`, every non-overlapping
    /// match, left to right) replaced by `replacement`.
    ///
    /// As in Go's `Regexp.ReplaceAllString`, which BuildKit uses, an empty match right
    /// after a previous match is not replaced, and the search always moves on by at least
    /// one character.
    pub(crate) fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let mut scratch = Threads::new(self.tokens.len());
        if !all {
            return match self.find(value, 0, &mut scratch) {
                Some((start, end)) => [&value[..start], replacement, &value[end..]].concat(),
                None => value.to_owned(),
            };
        }
        let mut out = String::with_capacity(value.len());
        let mut last_end = 0;
        let mut search = 0;
        while search <= value.len() {
            let Some((start, end)) = self.find(value, search, &mut scratch) else {
                break;
            };
            out.push_str(&value[last_end..start]);
            if end > last_end || start == 0 {
                out.push_str(replacement);
            }
            last_end = end;
            let width = value[search..].chars().next().map_or(0, char::len_utf8);
            search = if search + width > end {
                search + width
            } else if search + 1 > end {
                search + 1
            } else {
                end
            };
        }
        out.push_str(&value[last_end..]);
        out
    }

    fn token(&self, direction: Direction, state: usize) -> &Token {
        match direction {
            Direction::Forward => &self.tokens[state],
            Direction::Backward => &self.tokens[self.tokens.len() - 1 - state],
        }
    }

    /// Runs the automaton anchored at `origin` over `(char, boundary after it)` pairs;
    /// returns the boundary of the shortest or longest match.
    fn anchored_match(
        &self,
        direction: Direction,
        origin: usize,
        boundaries: impl Iterator<Item = (char, usize)>,
        longest: bool,
    ) -> Option<usize> {
        let accept = self.tokens.len();
        let mut live = vec![false; accept + 1];
        let mut next = vec![false; accept + 1];
        live[0] = true;
        self.close(direction, &mut live);
        let mut found = live[accept].then_some(origin);
        if found.is_some() && !longest {
            return found;
        }
        for (c, boundary) in boundaries {
            next.fill(false);
            let mut any = false;
            for state in 0..accept {
                if !live[state] {
                    continue;
                }
                match self.token(direction, state).step(c) {
                    Step::Stay => next[state] = true,
                    Step::Advance => next[state + 1] = true,
                    Step::Fail => continue,
                }
                any = true;
            }
            if !any {
                break;
            }
            std::mem::swap(&mut live, &mut next);
            self.close(direction, &mut live);
            if live[accept] {
                found = Some(boundary);
                if !longest {
                    break;
                }
            }
        }
        found
    }

    /// Adds the states reachable by letting a `*` match nothing.
    fn close(&self, direction: Direction, live: &mut [bool]) {
        for state in 0..self.tokens.len() {
            if live[state] && *self.token(direction, state) == Token::Star {
                live[state + 1] = true;
            }
        }
    }

    /// The leftmost match starting at or after `from`, longest among those starting
    /// there, as a byte range of `value`.
    fn find(&self, value: &str, from: usize, threads: &mut Threads) -> Option<(usize, usize)> {
        let accept = self.tokens.len();
        let Threads { starts, next } = threads;
        starts.fill(None);
        let mut best: Option<(usize, usize)> = None;
        let mut chars = value[from..].char_indices().map(|(at, c)| (from + at, c));
        let mut at = from;
        loop {
            if best.is_none() {
                starts[0] = Some(starts[0].map_or(at, |s| s.min(at)));
            }
            for state in 0..accept {
                if self.tokens[state] == Token::Star {
                    starts[state + 1] = min_start(starts[state + 1], starts[state]);
                }
            }
            if let Some(start) = starts[accept] {
                let better = match best {
                    None => true,
                    Some((best_start, best_end)) => {
                        start < best_start || (start == best_start && at > best_end)
                    }
                };
                if better {
                    best = Some((start, at));
                }
            }
            if let Some((best_start, _)) = best {
                for slot in starts.iter_mut() {
                    if slot.is_some_and(|s| s > best_start) {
                        *slot = None;
                    }
                }
                if starts.iter().all(Option::is_none) {
                    break;
                }
            }
            let Some((pos, c)) = chars.next() else {
                break;
            };
            next.fill(None);
            for state in 0..accept {
                let Some(start) = starts[state] else {
                    continue;
                };
                match self.tokens[state].step(c) {
                    Step::Stay => next[state] = min_start(next[state], Some(start)),
                    Step::Advance => next[state + 1] = min_start(next[state + 1], Some(start)),
                    Step::Fail => {}
                }
            }
            std::mem::swap(starts, next);
            at = pos + c.len_utf8();
        }
        best
    }
}

/// The live threads of a search: for each state, the earliest start of a thread in it (a
/// later thread in the same state can only produce the same ends with a worse start).
/// Kept between the searches of one replacement to reuse the allocations.
struct Threads {
    starts: Vec<Option<usize>>,
    next: Vec<Option<usize>>,
}

impl Threads {
    fn new(tokens: usize) -> Threads {
        Threads {
            starts: vec![None; tokens + 1],
            next: vec![None; tokens + 1],
        }
    }
}

fn min_start(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Forward,
    Backward,
}

/// What a token does with one character of the value.
enum Step {
    /// The token (a `*`) consumed it and can consume more.
    Stay,
    /// The token consumed it; the next token is up.
    Advance,
    /// The token does not match it.
    Fail,
}

impl Token {
    fn step(&self, c: char) -> Step {
        let advance = |ok: bool| if ok { Step::Advance } else { Step::Fail };
        match self {
            Token::Star if c != '\n' => Step::Stay,
            Token::Star => Step::Fail,
            Token::AnyChar => advance(c != '\n'),
            Token::Literal(l) => advance(*l == c),
            Token::Bracket(bracket) => advance(bracket.matches(c)),
        }
    }
}

impl Bracket {
    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match item {
            BracketItem::Char(x) => *x == c,
            BracketItem::Range(lo, hi) => (*lo..=*hi).contains(&c),
            BracketItem::Class(class) => class.contains(c),
        });
        hit != self.negated
    }
}

impl CharClass {
    fn from_name(name: &str) -> Option<CharClass> {
        Some(match name {
            "alnum" => CharClass::Alnum,
            "alpha" => CharClass::Alpha,
            "blank" => CharClass::Blank,
            "cntrl" => CharClass::Cntrl,
            "digit" => CharClass::Digit,
            "graph" => CharClass::Graph,
            "lower" => CharClass::Lower,
            "print" => CharClass::Print,
            "punct" => CharClass::Punct,
            "space" => CharClass::Space,
            "upper" => CharClass::Upper,
            "xdigit" => CharClass::Xdigit,
            _ => return None,
        })
    }

    fn contains(self, c: char) -> bool {
        match self {
            CharClass::Alnum => c.is_alphanumeric(),
            CharClass::Alpha => c.is_alphabetic(),
            CharClass::Blank => c == ' ' || c == '\t',
            CharClass::Cntrl => c.is_control(),
            CharClass::Digit => c.is_ascii_digit(),
            CharClass::Graph => !c.is_control() && !c.is_whitespace(),
            CharClass::Lower => c.is_lowercase(),
            CharClass::Print => !c.is_control(),
            CharClass::Punct => c.is_ascii_punctuation(),
            CharClass::Space => c.is_whitespace(),
            CharClass::Upper => c.is_uppercase(),
            CharClass::Xdigit => c.is_ascii_hexdigit(),
        }
    }
}

/// Parses a bracket expression from just after its `[`. Returns the bracket and how many
/// characters it used including the closing `]`, or `None` when there is no closing `]`
/// (the `[` is then an ordinary character).
fn parse_bracket(chars: &[char]) -> Result<Option<(Bracket, usize)>, PatternError> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Ok(None);
        };
        if c == ']' && !first {
            return Ok(Some((Bracket { negated, items }, i + 1)));
        }
        first = false;
        if c == '[' && chars.get(i + 1) == Some(&':') {
            let rest = &chars[i + 2..];
            if let Some(len) = rest.windows(2).position(|w| w == [':', ']']) {
                let name: String = rest[..len].iter().collect();
                let class = CharClass::from_name(&name).ok_or(PatternError::UnknownClass(name))?;
                items.push(BracketItem::Class(class));
                i += 2 + len + 2;
                continue;
            }
        }
        let Some((lo, used)) = bracket_char(&chars[i..]) else {
            return Ok(None);
        };
        i += used;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let Some((hi, used)) = bracket_char(&chars[i + 1..]) else {
                return Ok(None);
            };
            i += 1 + used;
            items.push(BracketItem::Range(lo, hi));
        } else {
            items.push(BracketItem::Char(lo));
        }
    }
}

/// One possibly escaped character inside a bracket expression, and how many characters
/// it took.
fn bracket_char(chars: &[char]) -> Option<(char, usize)> {
    match chars {
        ['\\', c, ..] => Some((*c, 2)),
        [c, ..] => Some((*c, 1)),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn prefixes_and_suffixes() {
        assert_eq!(pattern("*x").strip_prefix("axbxc", false), "bxc");
        assert_eq!(pattern("*x").strip_prefix("axbxc", true), "c");
        assert_eq!(pattern("x*").strip_suffix("axbxc", false), "axb");
        assert_eq!(pattern("x*").strip_suffix("axbxc", true), "a");
        assert_eq!(pattern("[a-c]?").strip_prefix("bzz", false), "z");
        assert_eq!(pattern("[!a-c]").strip_prefix("bzz", false), "bzz");
        assert_eq!(pattern("[[:digit:]]*").strip_suffix("v1.2", true), "v");
        assert_eq!(pattern("[[:digit:]]*").strip_suffix("v1.2", false), "v1.");
    }

    #[test]
    fn unclosed_bracket_is_literal() {
        assert_eq!(pattern("[ab").strip_prefix("[abc", false), "c");
        assert_eq!(pattern("[]").strip_prefix("[]x", false), "x");
        assert_eq!(pattern("[]]").strip_prefix("]x", false), "x");
    }

    #[test]
    fn leftmost_longest_replacement() {
        assert_eq!(pattern("b*").replace("abcabc", "X", false), "aX");
        assert_eq!(pattern("b?").replace("abcabc", "X", true), "aXaX");
        assert_eq!(pattern("").replace("ab", "-", true), "-a-b-");
        assert_eq!(pattern("x*").replace("ab", "-", true), "ab");
    }

    #[test]
    fn star_heavy_patterns_stay_fast() {
        let value = "a".repeat(20_000);
        let nasty = pattern(
            &"*a"
                .repeat(50)
                .chars()
                .chain("b".chars())
                .collect::<String>(),
        );
        assert_eq!(nasty.strip_prefix(&value, true), value);
        assert_eq!(nasty.replace(&value, "", true), value);
    }

    #[test]
    fn bad_escapes_and_classes() {
        assert_eq!(
            Pattern::parse("a\\x"),
            Err(PatternError::InvalidEscape('x'))
        );
        assert_eq!(Pattern::parse("a\\"), Err(PatternError::TrailingEscape));
        assert_eq!(
            Pattern::parse("[[:nope:]]"),
            Err(PatternError::UnknownClass("nope".into()))
        );
    }
}
