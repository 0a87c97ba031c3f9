//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) on RUN, COPY and ADD lines.
//!
//! BuildKit finds them in two passes, reproduced here: the whole instruction line is cut
//! into shell words with quotes and escapes kept as written, and every word of the shape
//! `[fd]<<[-]rest` is a heredoc. Its name is `rest` with quotes and escapes removed; the
//! body is expanded later only if removing them took away no quote character, which is
//! how BuildKit tells `<<EOF` (expand) from `<<"EOF"` or `<<'EOF'` (keep literal).
//! Variables are not expanded in either pass (BuildKit runs them with an empty
//! environment and unset variables kept as written).

/// A heredoc marker found in a word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) name: String,
    pub(crate) fd: u32,
    pub(crate) chomp: bool,
    pub(crate) expand: bool,
}

/// Cuts `line` into shell words keeping quotes and escapes; `None` when a quote is left
/// open (BuildKit then finds no heredoc on the line).
pub(crate) fn raw_words(line: &str) -> Option<Vec<&str>> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&line[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some(_) => {}
                    None => return None,
                }
            },
            '"' => loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some(_) => {}
                    None => return None,
                }
            },
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(&line[s..]);
    }
    Some(words)
}

/// Removes quotes and escapes from one word as the shell would (without expansion);
/// `None` if the word is unbalanced or splits into other than one word.
fn unquote(word: &str) -> Option<String> {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        n @ ('"' | '$' | '\\') => out.push(n),
                        n => {
                            out.push('\\');
                            out.push(n);
                        }
                    },
                    c => out.push(c),
                }
            },
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Reads a heredoc marker out of one word (`^(\d*)<<(-?)([^<]*)$`).
pub(crate) fn parse_marker(word: &str) -> Option<Marker> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote(rest)?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Some(Marker {
        expand: quotes(&name) == quotes(rest),
        fd: word[..digits].parse().unwrap_or(0),
        chomp,
        name,
    })
}

/// Every heredoc marker on an instruction line, in order.
pub(crate) fn markers(line: &str) -> Vec<Marker> {
    raw_words(line)
        .unwrap_or_default()
        .into_iter()
        .filter_map(parse_marker)
        .collect()
}

/// Removes leading tabs from every line, as `<<-` asks.
pub(crate) fn chomp(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, fd: u32, chomp: bool, expand: bool) -> Marker {
        Marker {
            name: name.into(),
            fd,
            chomp,
            expand,
        }
    }

    #[test]
    fn markers_on_lines() {
        assert_eq!(markers("RUN <<EOF"), [m("EOF", 0, false, true)]);
        assert_eq!(
            markers("RUN 3<<-'E1' cat <<\"E2\" > x"),
            [m("E1", 3, true, false), m("E2", 0, false, false)]
        );
        assert_eq!(markers("RUN echo '<<EOF'"), []);
        assert_eq!(markers("RUN echo \"<<EOF"), []);
        assert_eq!(markers("RUN cat <<EOF>out"), [m("EOF>out", 0, false, true)]);
        assert_eq!(markers("RUN cat <<<EOF <<- <<"), []);
        assert_eq!(markers("RUN x <<E\\OF"), [m("EOF", 0, false, true)]);
        assert_eq!(markers("RUN x <<E\"O\"F"), [m("EOF", 0, false, false)]);
    }

    #[test]
    fn chomp_strips_leading_tabs_only() {
        assert_eq!(chomp("\t\ta\n \tb\n\tc"), "a\n \tb\nc");
    }
}
