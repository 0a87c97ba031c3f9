//! Any `.dockerignore` text and any paths: reading, compiling and matching never panic,
//! cleaning a path twice changes nothing, and without `!` patterns everything below an
//! ignored path is ignored too.
//!
//! The input is the ignore file, a NUL byte, then paths one a line.
#![no_main]

use kiln_cache::context::pattern::{clean, glob_match};
use kiln_cache::context::{IgnoreMatcher, read_ignore_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ignore, paths) = text.split_once('\0').unwrap_or((text, ""));
    let patterns = read_ignore_file(ignore);
    for path in paths.lines() {
        let once = clean(path);
        assert_eq!(clean(&once), once, "clean is not idempotent on {path:?}");
        for pattern in &patterns {
            let _ = glob_match(pattern, path);
        }
    }
    let Ok(matcher) = IgnoreMatcher::new(&patterns) else {
        return;
    };
    for path in paths.lines() {
        let ignored = matcher.is_ignored(path);
        let cleaned = clean(path);
        if ignored && !matcher.has_exclusions() && cleaned != "/" {
            let below = format!("{cleaned}/below");
            assert!(
                matcher.is_ignored(&below),
                "{patterns:?} ignore {path:?} but not {below:?}"
            );
        }
    }
});
