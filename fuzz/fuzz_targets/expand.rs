//! Any word, with a small fixed environment, through both expansion entry points and
//! both escape characters: expansion never panics or hangs.
#![no_main]

use std::collections::HashMap;

use kiln_parser::shell::Lex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let env: HashMap<String, String> = [("A", "a b"), ("EMPTY", ""), ("PATH", "/usr/bin:/bin")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let lex = Lex::new(if first & 1 == 0 { '\\' } else { '`' })
        .with_skip_unset_env(first & 2 != 0)
        .with_raw_quotes(first & 4 != 0)
        .with_raw_escapes(first & 8 != 0);
    let _ = lex.process_word(input, &env);
    let _ = lex.process_words(input, &env);
});
