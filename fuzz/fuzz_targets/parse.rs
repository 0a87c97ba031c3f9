//! Any bytes, as a Dockerfile: parsing never panics or hangs, and an error's span lies
//! inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = kiln_parser::syntax::parse_syntax(text) {
        let _ = tree.dump();
    }
    if let Err(err) = kiln_parser::parse(text) {
        assert!(err.span.range().end <= text.len());
    }
});
