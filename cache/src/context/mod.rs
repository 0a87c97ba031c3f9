//! The files a build reads from outside: which ones (`.dockerignore`, `COPY --exclude`,
//! wildcard sources) and their content checksums, which enter cache keys.
//!
//! Patterns follow Docker's definitions exactly ([`pattern`], [`ignore`]); one walk
//! ([`select`]) decides which files a step reads, for both its key and its copy; checksums
//! ([`hash`]) cover what decides a copied file's result and nothing else.

pub mod hash;
pub mod ignore;
pub mod pattern;
pub mod select;

pub use hash::{HashStats, StatCache, checksum};
pub use ignore::{IgnoreError, IgnoreMatcher, MatchInfo, read_ignore_file};
pub use select::{ContextError, ContextTree, SelectedEntry, SelectedSource, Selection};
