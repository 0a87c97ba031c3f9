//! Runs build steps: commands in throw-away containers through an OCI runtime over
//! overlayfs snapshots, and file actions on host paths. It depends on neither the solver
//! nor the cache; callers hand it prepared mounts and get back an upper directory.
#![deny(missing_docs)]
