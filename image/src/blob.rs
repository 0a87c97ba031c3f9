//! Where blobs come from and go to, as seen by code in this crate.
//!
//! The content store lives in `kiln-cache`, which depends on this crate and not the other
//! way round; archives, exporters and the registry client read and write blobs through
//! these two traits, and the content store implements them.

use std::io::{self, Read};

use crate::Digest;

/// A place blobs can be read from by digest.
pub trait BlobRead {
    /// Opens the blob for reading; `io::ErrorKind::NotFound` when it is absent.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>>;

    /// The blob's size in bytes; `io::ErrorKind::NotFound` when it is absent.
    fn blob_size(&self, digest: &Digest) -> io::Result<u64>;

    /// Reads a whole blob into memory (manifests, configs, indexes).
    fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// A place blobs can be written to. Writes are verified: a blob whose bytes do not hash
/// to the expected digest is discarded and reported as `io::ErrorKind::InvalidData`.
pub trait BlobWrite {
    /// Whether the blob is already present (so a copy can be skipped).
    fn has_blob(&self, digest: &Digest) -> bool;

    /// Stores the bytes read from `data`, which must hash to `expected`; returns the size.
    fn write_blob(&self, expected: &Digest, data: &mut dyn Read) -> io::Result<u64>;

    /// Stores bytes whose digest is not known in advance; returns their digest and size.
    fn put_blob(&self, data: &[u8]) -> io::Result<(Digest, u64)> {
        let digest = Digest::of(data);
        let size = self.write_blob(&digest, &mut &data[..])?;
        Ok((digest, size))
    }
}
