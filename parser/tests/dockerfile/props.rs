//! Property tests: no input makes the parser panic, and Dockerfile-shaped input built
//! from the pieces that trip parsers up (continuations, heredocs, quotes, flags, JSON,
//! directives, CRLF) either parses or fails with a located error.

use proptest::prelude::*;

/// Runs both entry points; their results only need to exist.
fn parse_everything(text: &str) {
    let syntax = kiln_parser::syntax::parse_syntax(text);
    let typed = kiln_parser::parse(text);
    if let Ok(tree) = &syntax {
        let _ = tree.dump();
    }
    for err in [syntax.err(), typed.err()].into_iter().flatten() {
        assert!(
            err.span.range().end <= text.len(),
            "span past the end: {err:?}"
        );
        assert!(err.span.line >= 1);
    }
}

/// One line of plausible Dockerfile.
fn dockerfile_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "MAINTAINER",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "run",
        "FoO",
        "#",
        "# escape=`",
        "# syntax=x",
        "",
    ]);
    let piece = prop::sample::select(vec![
        " ",
        "\t",
        "\\",
        "`",
        "\"",
        "'",
        "<<EOF",
        "<<-EOF",
        "<<'X'",
        "EOF",
        "X",
        "\t\tEOF",
        "[\"a\", \"b\"]",
        "[",
        "]",
        "--mount=type=cache,target=/c",
        "--mount=",
        "--from=a",
        "--chmod=0755",
        "--link",
        "--network=none",
        "--interval=5s",
        "CMD",
        "NONE",
        "AS",
        "a=b",
        "=",
        "$VAR",
        "${X:-y}",
        "é",
        "\u{a0}",
        "\r",
        "--",
        "--x=\"q w\"",
        "3<<E",
    ]);
    (keyword, prop::collection::vec(piece, 0..8)).prop_map(|(k, pieces)| {
        let mut line = k.to_owned();
        for p in pieces {
            line.push(' ');
            line.push_str(p);
        }
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        parse_everything(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dockerfile_shaped_text_never_panics(
        lines in prop::collection::vec(dockerfile_line(), 0..24),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        parse_everything(&text);
        parse_everything(&format!("FROM base\n{text}"));
    }
}
