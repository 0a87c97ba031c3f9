//! The streaming pass that turns a tar stream into a stored blob: one producer writes the
//! tar, and separate threads hash it (the diffID), compress it, and hash and write the
//! compressed bytes (the digest), so hashing overlaps compression.
//!
//! Data moves in fixed-size chunks through bounded channels, so memory stays flat however
//! large the layer grows: at most a few chunks per stage are alive at once. A chunk is
//! shared (`Arc`) between the diffID hasher and the compressor rather than copied.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Compression, LayerError};
use crate::{Digest, Digester};

/// A piece of a stream in flight between stages.
pub(super) type Chunk = Arc<Vec<u8>>;

/// Size of the chunks the producer emits; also the gzip block size.
const CHUNK_SIZE: usize = 1 << 20;
/// Chunks queued between two stages.
const QUEUE: usize = 4;

/// What one pass measured.
pub(super) struct Hashed {
    pub diff_id: Digest,
    pub diff_size: u64,
    pub digest: Digest,
    pub size: u64,
}

/// Buffers a byte stream into chunks and sends each full chunk to every sink.
pub(super) struct ChunkWriter {
    buf: Vec<u8>,
    sinks: Vec<Sender<Chunk>>,
}

fn consumer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "layer stream consumer stopped")
}

impl ChunkWriter {
    fn new(sinks: Vec<Sender<Chunk>>) -> ChunkWriter {
        ChunkWriter {
            buf: Vec::with_capacity(CHUNK_SIZE),
            sinks,
        }
    }

    fn send_full(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Arc::new(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_SIZE),
        ));
        for sink in &self.sinks {
            sink.send(chunk.clone()).map_err(|_| consumer_gone())?;
        }
        Ok(())
    }

    /// Copies up to `len` bytes from `src` straight into the chunk buffers (no
    /// intermediate buffer); returns how many were read before `src` ended.
    pub(super) fn copy_from(&mut self, src: &mut impl Read, len: u64) -> io::Result<u64> {
        let mut left = len;
        while left > 0 {
            if self.buf.len() == CHUNK_SIZE {
                self.send_full()?;
            }
            let room =
                (CHUNK_SIZE - self.buf.len()).min(usize::try_from(left).unwrap_or(usize::MAX));
            let start = self.buf.len();
            self.buf.resize(start + room, 0);
            let n = loop {
                match src.read(&mut self.buf[start..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                break;
            }
            left -= n as u64;
        }
        Ok(len - left)
    }

    /// Appends `n` zero bytes (tar padding).
    pub(super) fn zeros(&mut self, n: usize) -> io::Result<()> {
        self.copy_from(&mut io::repeat(0), n as u64).map(drop)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == CHUNK_SIZE {
            self.send_full()?;
        }
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` (which writes an uncompressed tar stream) through hashing and
/// `compression` at `level` into `out`.
pub(super) fn run<W, P>(
    out: &mut W,
    compression: Compression,
    level: i32,
    produce: P,
) -> Result<Hashed, LayerError>
where
    W: Write,
    P: FnOnce(&mut ChunkWriter) -> Result<(), LayerError> + Send,
{
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let (hash_tx, hash_rx) = bounded::<Chunk>(QUEUE);
    let (raw_tx, raw_rx) = bounded::<Chunk>(QUEUE);
    let (packed_tx, packed_rx) = bounded::<Chunk>(QUEUE);

    thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut w = ChunkWriter::new(vec![hash_tx, raw_tx]);
            produce(&mut w)?;
            w.send_full()
                .map_err(|source| LayerError::WriteLayer { source })
        });
        let hasher = s.spawn(move || {
            let mut d = Digester::new();
            for chunk in hash_rx {
                d.update(&chunk);
            }
            let len = d.len();
            (d.finish(), len)
        });
        let compressor = s.spawn(move || compress(raw_rx, packed_tx, compression, level, workers));

        let mut digester = Digester::new();
        let mut written = Ok(());
        for chunk in &packed_rx {
            digester.update(&chunk);
            if let Err(source) = out.write_all(&chunk) {
                written = Err(source);
                break;
            }
        }
        drop(packed_rx);

        let produced = producer.join().expect("layer producer thread panicked");
        let compressed = compressor.join().expect("layer compressor thread panicked");
        let (diff_id, diff_size) = hasher.join().expect("layer hasher thread panicked");
        // The first cause wins: a failing walk or output explains the broken pipes after it.
        written.map_err(|source| LayerError::WriteLayer { source })?;
        produced?;
        compressed.map_err(|source| LayerError::WriteLayer { source })?;
        let size = digester.len();
        Ok(Hashed {
            diff_id,
            diff_size,
            digest: digester.finish(),
            size,
        })
    })
}

fn compress(
    input: Receiver<Chunk>,
    output: Sender<Chunk>,
    compression: Compression,
    level: i32,
    workers: usize,
) -> io::Result<()> {
    match compression {
        Compression::None => {
            for chunk in input {
                output.send(chunk).map_err(|_| consumer_gone())?;
            }
            Ok(())
        }
        Compression::Gzip => super::gzip::compress(input, output, level.unsigned_abs(), workers),
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(ChunkWriter::new(vec![output]), level)?;
            // Always in multithreaded mode: its output is the same for any worker count ≥ 1
            // (but differs from single-threaded mode), so digests do not depend on the machine.
            enc.multithread(workers as u32)?;
            for chunk in input {
                enc.write_all(&chunk)?;
            }
            enc.finish()?.send_full()
        }
    }
}
