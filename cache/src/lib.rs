//! What kiln keeps between builds: the content store (blobs by digest), snapshots
//! (unpacked layer chains), the cache index, compressed variants of plain layers and
//! garbage collection.
//!
//! Everything lives under one root directory ([`Store`]), in versioned folders; the
//! on-disk layout, its atomicity and locking rules are in `docs/storage.md`. Every write
//! lands in a temporary path first and is renamed into place, so a process killed at
//! any moment leaves a store the next one can use.
#![deny(missing_docs)]

pub mod chain;
pub mod check;
pub mod content;
pub mod context;
mod error;
pub mod gc;
pub mod index;
mod journal;
pub mod lock;
pub mod remote;
pub mod root;
mod scratch;
pub mod snapshot;
pub mod variant;

#[cfg(test)]
mod test_support;

pub use chain::ChainId;
pub use check::{CheckReport, Finding, Problem};
pub use content::{BlobInfo, BlobWriter, ContentStore};
pub use error::CacheError;
pub use gc::{DiskUsage, GcOptions, GcReport, GcRoots};
pub use index::{CacheIndex, CacheRecord, IndexError, LayerRecord};
pub use lock::{StepLock, StepLocks};
pub use root::{ExclusiveStore, Store};
pub use scratch::Swept;
pub use snapshot::{LayerRef, ScratchDir, SnapshotDamage, SnapshotInfo, SnapshotMode, Snapshotter};
