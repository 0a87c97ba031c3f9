//! Arbitrary input never panics, hangs or reports an offset outside the input.

use std::collections::BTreeMap;

use kiln_parser::shell::Lex;
use proptest::prelude::*;

/// Text dense in the characters the expander treats specially, or any text at all.
fn shellish() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[\\\\`$\\{\\}:\\-+?#%/'\" ab1@*\\[\\]!^\\t\\n한]{0,48}",
        1 => any::<String>(),
    ]
}

fn env() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("1".to_owned()),
            Just("@".to_owned()),
            "[a-z_]{1,3}"
        ],
        shellish(),
        0..4,
    )
}

fn lex() -> impl Strategy<Value = Lex> {
    (prop_oneof![Just('\\'), Just('`')], any::<[bool; 4]>()).prop_map(|(escape, [q, e, p, u])| {
        Lex::new(escape)
            .with_raw_quotes(q)
            .with_raw_escapes(e)
            .with_skip_process_quotes(p)
            .with_skip_unset_env(u)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn expansion_is_total(input in shellish(), env in env(), lex in lex()) {
        let word = lex.process_word(&input, &env);
        let words = lex.process_words(&input, &env);
        let matched = lex.process_word_with_matches(&input, &env);
        match (&word, &words, &matched) {
            (Ok(w), Ok(ws), Ok(m)) => {
                prop_assert_eq!(w, &m.result);
                for name in &m.matched {
                    prop_assert!(env.contains_key(name));
                }
                for name in &m.unmatched {
                    prop_assert!(!env.contains_key(name));
                }
                prop_assert!(ws.iter().all(|w| !w.is_empty()));
            }
            (Err(a), Err(b), Err(c)) => {
                prop_assert_eq!(a, b);
                prop_assert_eq!(a, c);
                prop_assert!(input.is_char_boundary(a.offset()));
                prop_assert!(a.offset() < input.len());
            }
            _ => prop_assert!(false, "modes disagree: {:?} {:?} {:?}", word, words, matched),
        }
    }

    #[test]
    fn words_of_plain_text_are_whitespace_split(input in "[a-z \\t]{0,40}") {
        let words = Lex::new('\\').process_words(&input, &BTreeMap::new()).unwrap();
        let expected: Vec<&str> = input.split_whitespace().collect();
        prop_assert_eq!(words, expected);
    }
}
