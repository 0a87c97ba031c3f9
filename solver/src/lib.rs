//! Lowers a parsed Dockerfile into a build graph of content-addressed steps, computes
//! their cache keys, and schedules them. Execution is reached only through the solver's
//! own worker trait, so this crate knows nothing of containers or disks.
#![deny(missing_docs)]
