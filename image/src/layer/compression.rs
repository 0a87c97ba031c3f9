//! Layer compression: which algorithms exist, their levels, and recognising a compressed
//! stream by its first bytes.
//!
//! Registries and stores hand out blobs whose media type may be missing or lie (Docker
//! archives label everything gzip), so the applier trusts magic bytes, not labels. The
//! writer's side (parallel gzip, multithreaded zstd) lives in [`super::pipeline`].

use std::fmt;
use std::io::{self, Read};

use super::LayerError;

/// How a layer's tar stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), the format every registry and runtime understands.
    #[default]
    Gzip,
    /// Zstandard, smaller and much faster; understood by containerd ≥ 1.5 and Docker ≥ 23.
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BZIP2_MAGIC: &[u8] = b"BZh";
/// Enough leading bytes to tell every format above apart.
const MAGIC_LEN: usize = 6;

impl Compression {
    /// The level used when none is asked for: gzip's usual 6 and zstd's usual 3, the
    /// defaults of BuildKit too.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }

    /// Checks that `level` is meaningful for this algorithm (gzip 0–9, zstd −7–22);
    /// for an uncompressed layer any level is accepted and ignored.
    pub fn check_level(self, level: i32) -> Result<i32, LayerError> {
        let ok = match self {
            Compression::None => true,
            Compression::Gzip => (0..=9).contains(&level),
            Compression::Zstd => (-7..=22).contains(&level),
        };
        if ok {
            Ok(level)
        } else {
            Err(LayerError::InvalidLevel {
                compression: self,
                level,
            })
        }
    }

    /// Recognises the compression of a stream from its first bytes. A stream that is
    /// neither gzip, zstd, xz nor bzip2 is taken to be a plain tar (whose reader then
    /// checks the headers).
    pub fn detect(head: &[u8]) -> Result<Compression, LayerError> {
        if head.starts_with(GZIP_MAGIC) {
            Ok(Compression::Gzip)
        } else if head.starts_with(ZSTD_MAGIC) {
            Ok(Compression::Zstd)
        } else if head.starts_with(XZ_MAGIC) {
            Err(LayerError::UnsupportedCompression { format: "xz" })
        } else if head.starts_with(BZIP2_MAGIC) {
            Err(LayerError::UnsupportedCompression { format: "bzip2" })
        } else {
            Ok(Compression::None)
        }
    }

    /// Reads the first bytes of `input`, recognises its compression and returns it with
    /// a reader of the decompressed bytes.
    pub fn decompress<'a, R: Read + 'a>(
        mut input: R,
    ) -> Result<(Compression, Box<dyn Read + 'a>), LayerError> {
        let mut head = [0u8; MAGIC_LEN];
        let mut got = 0;
        while got < MAGIC_LEN {
            match input.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(LayerError::ReadLayer { source }),
            }
        }
        let compression = Compression::detect(&head[..got])?;
        let whole = io::Cursor::new(head).take(got as u64).chain(input);
        let reader: Box<dyn Read + 'a> = match compression {
            Compression::None => Box::new(whole),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(whole)
                    .map_err(|source| LayerError::ReadLayer { source })?,
            ),
        };
        Ok((compression, reader))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_by_magic() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8]).unwrap(),
            Compression::Gzip
        );
        assert_eq!(Compression::detect(ZSTD_MAGIC).unwrap(), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/\0").unwrap(), Compression::None);
        assert_eq!(Compression::detect(b"").unwrap(), Compression::None);
        assert!(matches!(
            Compression::detect(XZ_MAGIC),
            Err(LayerError::UnsupportedCompression { format: "xz" })
        ));
    }

    #[test]
    fn decompresses_what_it_detects() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&b"hello"[..], 1).unwrap();
        for (bytes, kind) in [
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
            (b"hello".to_vec(), Compression::None),
        ] {
            let (got, mut r) = Compression::decompress(&bytes[..]).unwrap();
            assert_eq!(got, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, b"hello");
        }
        // Shorter than the magic window: still read whole.
        let (_, mut r) = Compression::decompress(&b"hi"[..]).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hi");
    }

    #[test]
    fn levels_are_checked() {
        assert!(Compression::Gzip.check_level(9).is_ok());
        assert!(Compression::Gzip.check_level(10).is_err());
        assert!(Compression::Zstd.check_level(19).is_ok());
        assert!(Compression::Zstd.check_level(23).is_err());
        assert!(Compression::None.check_level(1).is_ok());
    }
}
