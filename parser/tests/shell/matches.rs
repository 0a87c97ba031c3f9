//! Which variables an expansion looked up: the solver keys steps on exactly these.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_parser::shell::{Env, Expansion, Lex, ShellError};

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn expand(input: &str, env: &[(&str, &str)]) -> Expansion {
    Lex::new('\\')
        .process_word_with_matches(input, &env)
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
}

#[test]
fn looked_up_names_are_reported() {
    let env = [("FOO", "xxx"), ("BAR", "")];
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        ("x", "x", &[], &[]),
        ("x ${UNUSED}", "x ", &[], &["UNUSED"]),
        (
            "${FOO-a} ${BAR-b} ${BAZ-c}",
            "xxx  c",
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-a} ${BAR:-b} ${BAZ:-c}",
            "xxx b c",
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+a} ${BAR:+b} ${BAZ:+c}",
            "a  ",
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO#$BAR}", "xxx", &["FOO", "BAR"], &[]),
        ("${BAZ:-${FOO}}", "xxx", &["FOO"], &["BAZ"]),
        ("$FOO$FOO$FOO", "xxxxxxxxx", &["FOO"], &[]),
        ("'$FOO' \\$BAR", "$FOO $BAR", &[], &[]),
        ("\"$1\" $@", " ", &[], &["1", "@"]),
        ("${FOO//x/$BAZ}", "", &["FOO"], &["BAZ"]),
    ];
    for &(input, result, matched, unmatched) in cases {
        let expansion = expand(input, &env);
        assert_eq!(expansion.result, result, "{input:?}");
        assert_eq!(expansion.matched, names(matched), "{input:?}");
        assert_eq!(expansion.unmatched, names(unmatched), "{input:?}");
    }
}

#[test]
fn build_platform_file_name() {
    let release =
        "tool-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        Lex::new('\\').process_word(release, &env).unwrap()
    };
    assert_eq!(
        with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
        "tool-v1.2.3.linux-arm-v7.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
        "tool-v1.2.3.linux-arm64.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64")]),
        "tool-v1.2.3.linux-arm64.tar.gz"
    );
}

#[test]
fn every_env_shape_expands_alike() {
    let input = "${A}-${B:-none}-${C-unset}";
    let hash: HashMap<String, String> = [("A", "1"), ("C", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tree: BTreeMap<String, String> = hash.clone().into_iter().collect();
    let entries = vec!["A=1".to_owned(), "C".to_owned()];
    let pairs = [("A", "1"), ("C", "")];
    let envs: [&dyn Env; 4] = [&hash, &tree, &entries, &pairs];
    for env in envs {
        assert_eq!(Lex::new('\\').process_word(input, env).unwrap(), "1-none-");
    }
}

#[test]
fn required_variable_message_is_expanded() {
    let lex = Lex::new('\\');
    let word = "${VAR:?message here$ARG}";
    let set = [("VAR", "plain"), ("ARG", "x")];
    assert_eq!(lex.process_word(word, &set).unwrap(), "plain");
    for env in [&[("VAR", ""), ("ARG", "x")][..], &[("ARG", "x")][..]] {
        let err = lex.process_word(word, &env).unwrap_err();
        assert_eq!(
            err,
            ShellError::Required {
                offset: 0,
                name: "VAR".into(),
                message: "message herex".into()
            }
        );
    }
}

#[test]
fn error_offsets_point_into_multibyte_input() {
    let lex = Lex::new('\\');
    let err = lex.process_word("한국어 ${", &[("A", "")]).unwrap_err();
    assert_eq!(err.offset(), "한국어 ".len());
    let err = lex.process_word("é'x", &[("A", "")]).unwrap_err();
    assert_eq!(err.offset(), "é".len());
}

#[test]
fn nesting_is_bounded() {
    let lex = Lex::new('\\');
    let env = [("A", "")];
    let deep = |n: usize| format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
    assert_eq!(
        lex.process_word(&deep(kiln_parser::shell::MAX_NESTING), &env)
            .unwrap(),
        "x"
    );
    let err = lex.process_word(&deep(100_000), &env).unwrap_err();
    assert!(matches!(err, ShellError::TooDeep { .. }), "{err:?}");
}
