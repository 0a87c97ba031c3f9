//! The executor against real runc, as root, over a busybox rootfs built per test.
//!
//! Every test needs root, `runc` (Debian package `runc`) and `/bin/busybox` (Debian
//! package `busybox-static`); a missing one fails the test with a message naming it.

mod cleanup;
mod file;
mod layer;
mod mounts;
mod network;
mod run;
mod security;
mod support;
