//! What kiln keeps between builds: the content store (blobs by digest), snapshots
//! (unpacked layer chains), the cache index and garbage collection.
//!
//! Every write lands in a temporary path first and is renamed into place, so a process
//! killed at any moment leaves a store the next one can use.
#![deny(missing_docs)]

pub mod chain;
pub mod content;
mod error;
mod scratch;

pub use chain::ChainId;
pub use content::{BlobInfo, BlobWriter, ContentStore};
pub use error::CacheError;
