//! Inputs built to find quadratic corners: the longest line BuildKit accepts full of
//! flags, one instruction continued over many lines, many heredocs on one line, deeply
//! nested JSON. Each must parse (or fail cleanly) in linear time; the bound below is
//! generous for an unoptimised build on a busy machine, while a quadratic path would
//! take minutes.

use std::time::{Duration, Instant};

use kiln_parser::ErrorKind;
use kiln_parser::syntax::{MAX_LINE_LEN, parse_syntax};

const BOUND: Duration = Duration::from_secs(20);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < BOUND, "{what} took {took:?}");
    out
}

#[test]
fn longest_line_of_flags() {
    let mut line = String::from("RUN");
    while line.len() + 5 <= MAX_LINE_LEN {
        line.push_str(" --ab");
    }
    let text = format!("FROM x\n{line}\n");
    let tree = timed("flag line", || parse_syntax(&text)).expect("parses");
    let flags = &tree.nodes[1].flags;
    assert_eq!(flags.len(), (MAX_LINE_LEN - 3) / 5);
    let last = flags.last().expect("flags");
    assert_eq!(last.span.column as usize, 3 + 5 * (flags.len() - 1) + 2);
    let err = timed("typed", || kiln_parser::parse(&text)).expect_err("unknown flag");
    assert!(matches!(err.kind, ErrorKind::UnknownFlag { .. }));
}

#[test]
fn line_length_limit_is_buildkits() {
    let ok = format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE_LEN - 4));
    assert!(parse_syntax(&ok).is_ok());
    let too_long = format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE_LEN - 3));
    let err = parse_syntax(&too_long).expect_err("too long");
    assert_eq!(err.kind, ErrorKind::LineTooLong { max: MAX_LINE_LEN });
    assert_eq!(err.span.line, 2);
}

#[test]
fn one_instruction_over_many_lines() {
    let text = format!(
        "FROM x\nRUN a \\\n{}  end\n",
        "  word \\\n# c\n\n".repeat(100_000)
    );
    let tree = timed("continuations", || parse_syntax(&text)).expect("parses");
    assert_eq!(tree.nodes.len(), 2);
    assert_eq!(tree.nodes[1].span.end_line, 300_003);
}

#[test]
fn many_heredocs_on_one_line() {
    let count = 8_000;
    let mut text = String::from("FROM x\nRUN cat");
    for i in 0..count {
        text.push_str(&format!(" <<h{i}"));
    }
    text.push('\n');
    for i in 0..count {
        text.push_str(&format!("body {i}\nh{i}\n"));
    }
    let tree = timed("heredocs", || parse_syntax(&text)).expect("parses");
    assert_eq!(tree.nodes[1].heredocs.len(), count);
}

#[test]
fn deeply_nested_json_is_shell_form() {
    let depth = 20_000;
    let text = format!("FROM x\nCMD {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let tree = timed("nested json", || parse_syntax(&text)).expect("parses");
    assert!(!tree.nodes[1].json);
}

#[test]
fn many_instructions() {
    let text = format!(
        "FROM x\n{}",
        "RUN --mount=type=cache,target=/c echo $A\n".repeat(100_000)
    );
    let file = timed("instructions", || kiln_parser::parse(&text)).expect("parses");
    assert_eq!(file.stages[0].instructions.len(), 100_000);
}
