//! The files a build reads from outside: which ones (`.dockerignore`, `COPY --exclude`,
//! wildcard sources) and their content checksums, which enter cache keys.
//!
//! Patterns follow Docker's definitions exactly ([`pattern`], [`ignore`]); checksums
//! ([`hash`]) cover what decides a copied file's result and nothing else.

pub mod hash;
pub mod ignore;
pub mod pattern;

pub use hash::{ContextError, HashStats, Selection, StatCache, TreeHasher};
pub use ignore::{IgnoreError, IgnoreMatcher, MatchInfo, read_ignore_file};
