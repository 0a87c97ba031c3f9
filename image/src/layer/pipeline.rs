//! The streaming pass that turns a tar stream into a stored blob: one producer writes the
//! tar, and separate threads hash it (the diffID), compress it, and hash and write the
//! compressed bytes (the digest), so hashing overlaps compression.
//!
//! Data moves in fixed-size chunks through bounded channels, so memory stays flat however
//! large the layer grows: at most a few chunks per stage are alive at once. A chunk is
//! shared (`Arc`) between the diffID hasher and the compressor rather than copied, and
//! once its last reader is done its buffer goes back to a process-wide pool, so streams
//! reuse the same few megabytes instead of allocating and faulting in new ones.
//!
//! An uncompressed layer needs one hash only. It is read and hashed on two threads when
//! a core is idle, and on the caller's thread alone when none is: there a second thread
//! would only add copying the stream from one core's cache to the other's.
//!
//! One pass already keeps every core busy, so a process runs at most as many passes at
//! once as it has cores: more would add their buffers (tens of megabytes each), not
//! speed. Steps of parallel stages that finish together take turns.

use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Compression, LayerDescriptor, LayerError};
use crate::media_type::Flavor;
use crate::{Digest, Digester};

/// How many passes run at once in this process, and a wake-up for those waiting.
struct Gate {
    running: Mutex<usize>,
    freed: Condvar,
}

/// A pass's turn; the next waiting pass starts when it is dropped.
struct Turn<'g>(&'g Gate);

impl Gate {
    const fn new() -> Gate {
        Gate {
            running: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn count(&self) -> MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until fewer than `limit` passes run, then counts this one.
    fn enter(&self, limit: usize) -> Turn<'_> {
        let mut running = self.count();
        while *running >= limit.max(1) {
            running = self.freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.count() -= 1;
        self.0.freed.notify_one();
    }
}

static PASSES: Gate = Gate::new();

/// A piece of a stream in flight between stages.
pub(super) type Chunk = Arc<Vec<u8>>;

/// Size of the chunks the producer emits; also the gzip block size.
const CHUNK_SIZE: usize = 1 << 20;
/// Chunks queued between two stages.
const QUEUE: usize = 8;

/// Spare chunk buffers, kept for the life of the process: a buffer's pages are faulted
/// in once, not again by every pass (the allocator hands freed megabytes back to the
/// kernel, and faulting a layer's worth of fresh pages in costs as much as hashing it).
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Most spare buffers kept: what one pass holds when all its queues are full. Passes
/// that need more at once allocate the rest and free them when done.
const SPARE_LIMIT: usize = 2 * QUEUE;

/// The chunk buffers of the passes, taken from and given back to [`SPARE`].
#[derive(Clone, Copy)]
struct Buffers;

impl Buffers {
    fn spare() -> MutexGuard<'static, Vec<Vec<u8>>> {
        SPARE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for a whole chunk.
    fn take(self) -> Vec<u8> {
        Buffers::spare()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE))
    }

    /// Keeps `buf` as a spare if it is a chunk buffer and there is room.
    fn give(self, mut buf: Vec<u8>) {
        if buf.capacity() == CHUNK_SIZE {
            buf.clear();
            let mut spare = Buffers::spare();
            if spare.len() < SPARE_LIMIT {
                spare.push(buf);
            }
        }
    }

    /// Drops this reference to `chunk`; the last one gives its buffer back.
    fn recycle(self, chunk: Chunk) {
        if let Some(buf) = Arc::into_inner(chunk) {
            self.give(buf);
        }
    }
}

/// What one pass measured.
pub(super) struct Hashed {
    pub diff_id: Digest,
    pub diff_size: u64,
    pub digest: Digest,
    pub size: u64,
}

impl Hashed {
    /// What a pass of an uncompressed layer measured: its blob is its tar.
    fn plain(digest: Digest, size: u64) -> Hashed {
        Hashed {
            diff_id: digest.clone(),
            diff_size: size,
            digest,
            size,
        }
    }

    /// The descriptor of the blob this pass wrote, a layer of `flavor` and `compression`.
    pub(super) fn describe(self, flavor: Flavor, compression: Compression) -> LayerDescriptor {
        LayerDescriptor {
            digest: self.digest,
            size: self.size,
            diff_id: self.diff_id,
            diff_size: self.diff_size,
            media_type: flavor.layer(compression),
            compression,
        }
    }
}

/// Buffers a byte stream into chunks and hands each full chunk on.
pub(super) struct ChunkWriter<'o> {
    buf: Vec<u8>,
    sink: Sink<'o>,
    buffers: Buffers,
}

/// Where a [`ChunkWriter`]'s full chunks go.
enum Sink<'o> {
    /// To the threads of the other stages, each chunk to every one of them.
    Threads(Vec<Sender<Chunk>>),
    /// Hashed and written out on the producer's own thread, in chunks small enough to
    /// still be in the core's cache when they are hashed.
    Here {
        digester: Digester,
        out: &'o mut dyn Write,
        /// The first error writing `out`; the producer sees a broken pipe.
        failed: Option<io::Error>,
    },
}

/// Size of the chunks a [`Sink::Here`] writer hashes.
const HERE_CHUNK_SIZE: usize = 128 << 10;

fn consumer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "layer stream consumer stopped")
}

impl<'o> ChunkWriter<'o> {
    fn new(sinks: Vec<Sender<Chunk>>, buffers: Buffers) -> ChunkWriter<'o> {
        ChunkWriter {
            buf: buffers.take(),
            sink: Sink::Threads(sinks),
            buffers,
        }
    }

    fn here(out: &'o mut dyn Write, buffers: Buffers) -> ChunkWriter<'o> {
        ChunkWriter {
            buf: buffers.take(),
            sink: Sink::Here {
                digester: Digester::new(),
                out,
                failed: None,
            },
            buffers,
        }
    }

    /// How full the buffer gets before it is handed on.
    fn chunk_size(&self) -> usize {
        match self.sink {
            Sink::Threads(_) => CHUNK_SIZE,
            Sink::Here { .. } => HERE_CHUNK_SIZE,
        }
    }

    fn send_full(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Threads(sinks) => {
                let chunk = Arc::new(std::mem::replace(&mut self.buf, self.buffers.take()));
                for sink in sinks.iter() {
                    sink.send(chunk.clone()).map_err(|_| consumer_gone())?;
                }
            }
            Sink::Here {
                digester,
                out,
                failed,
            } => {
                if failed.is_some() {
                    return Err(consumer_gone());
                }
                digester.update(&self.buf);
                if let Err(e) = out.write_all(&self.buf) {
                    *failed = Some(e);
                    return Err(consumer_gone());
                }
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Hands on what is buffered and returns what a [`Sink::Here`] writer hashed: the
    /// first error writing out, or the digest and length of the stream.
    fn finish_here(mut self) -> io::Result<(Digest, u64)> {
        let sent = self.send_full();
        match std::mem::replace(&mut self.sink, Sink::Threads(Vec::new())) {
            Sink::Here {
                failed: Some(e), ..
            } => Err(e),
            Sink::Here { digester, .. } => {
                sent?;
                let len = digester.len();
                Ok((digester.finish(), len))
            }
            Sink::Threads(_) => unreachable!("finish_here is only called on a Here writer"),
        }
    }

    /// Copies up to `len` bytes from `src` straight into the chunk buffers (no
    /// intermediate buffer, no zero-filling first); returns how many were read before
    /// `src` ended.
    pub(super) fn copy_from(&mut self, src: &mut impl Read, len: u64) -> io::Result<u64> {
        let size = self.chunk_size();
        let mut left = len;
        while left > 0 {
            if self.buf.len() >= size {
                self.send_full()?;
            }
            let room = (size - self.buf.len()) as u64;
            // Bounded by the room left, so the buffer never grows past a chunk.
            let n = src
                .by_ref()
                .take(room.min(left))
                .read_to_end(&mut self.buf)?;
            if n == 0 {
                break;
            }
            left -= n as u64;
        }
        Ok(len - left)
    }

    /// Appends `n` zero bytes (tar padding).
    pub(super) fn zeros(&mut self, mut n: usize) -> io::Result<()> {
        let size = self.chunk_size();
        while n > 0 {
            if self.buf.len() >= size {
                self.send_full()?;
            }
            let k = n.min(size - self.buf.len());
            self.buf.resize(self.buf.len() + k, 0);
            n -= k;
        }
        Ok(())
    }
}

impl Drop for ChunkWriter<'_> {
    fn drop(&mut self) {
        self.buffers.give(std::mem::take(&mut self.buf));
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let size = self.chunk_size();
        if self.buf.len() >= size {
            self.send_full()?;
        }
        let n = data.len().min(size - self.buf.len());
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
    let _turn = PASSES.enter(workers);
    let buffers = Buffers;
    if compression == Compression::None {
        return plain(out, buffers, workers, produce);
    }
    let (hash_tx, hash_rx) = bounded::<Chunk>(QUEUE);
    let (raw_tx, raw_rx) = bounded::<Chunk>(QUEUE);
    let (packed_tx, packed_rx) = bounded::<Chunk>(QUEUE);

    thread::scope(|s| {
        let producer = {
            s.spawn(move || {
                let mut w = ChunkWriter::new(vec![hash_tx, raw_tx], buffers);
                produce(&mut w)?;
                w.send_full()
                    .map_err(|source| LayerError::WriteLayer { source })
            })
        };
        let hasher = {
            s.spawn(move || {
                let mut d = Digester::new();
                for chunk in hash_rx {
                    d.update(&chunk);
                    buffers.recycle(chunk);
                }
                let len = d.len();
                (d.finish(), len)
            })
        };
        let compressor = {
            s.spawn(move || match compression {
                Compression::None => unreachable!("plain layers take the single-hash path"),
                Compression::Gzip => {
                    super::gzip::compress(raw_rx, packed_tx, level.unsigned_abs(), workers)
                }
                Compression::Zstd => zstd(raw_rx, packed_tx, level, workers, buffers),
            })
        };

        let (written, digest, size) = drain(packed_rx, out, buffers);
        let produced = producer.join().expect("layer producer thread panicked");
        let compressed = compressor.join().expect("layer compressor thread panicked");
        let (diff_id, diff_size) = hasher.join().expect("layer hasher thread panicked");
        // The first cause wins: a failing walk or output explains the broken pipes after it.
        written.map_err(|source| LayerError::WriteLayer { source })?;
        produced?;
        compressed.map_err(|source| LayerError::WriteLayer { source })?;
        Ok(Hashed {
            diff_id,
            diff_size,
            digest,
            size,
        })
    })
}

/// The pass of an uncompressed layer: the blob is the tar, so one hash gives both the
/// diffID and the digest. Reading the files and hashing them overlap on two threads
/// when a core is idle; otherwise the hashing thread would only add the copying of the
/// stream between cores to the work, and the pass runs on the calling thread alone.
fn plain<W, P>(
    out: &mut W,
    buffers: Buffers,
    cores: usize,
    produce: P,
) -> Result<Hashed, LayerError>
where
    W: Write,
    P: FnOnce(&mut ChunkWriter) -> Result<(), LayerError> + Send,
{
    if a_core_is_idle(cores) {
        plain_threads(out, buffers, produce)
    } else {
        plain_here(out, buffers, produce)
    }
}

/// Whether fewer threads are running or ready to run than the `cores` this process may
/// use, from the kernel's count in `/proc/loadavg` (which includes the caller).
fn a_core_is_idle(cores: usize) -> bool {
    let running = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let field = text.split_whitespace().nth(3)?;
            field.split('/').next()?.parse::<usize>().ok()
        });
    running.is_none_or(|running| running < cores)
}

/// [`plain`] with the files read on a thread of their own.
fn plain_threads<W, P>(out: &mut W, buffers: Buffers, produce: P) -> Result<Hashed, LayerError>
where
    W: Write,
    P: FnOnce(&mut ChunkWriter) -> Result<(), LayerError> + Send,
{
    let (raw_tx, raw_rx) = bounded::<Chunk>(QUEUE);
    thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut w = ChunkWriter::new(vec![raw_tx], buffers);
            produce(&mut w)?;
            w.send_full()
                .map_err(|source| LayerError::WriteLayer { source })
        });
        let (written, digest, size) = drain(raw_rx, out, buffers);
        let produced = producer.join().expect("layer producer thread panicked");
        written.map_err(|source| LayerError::WriteLayer { source })?;
        produced?;
        Ok(Hashed::plain(digest, size))
    })
}

/// [`plain`] on the calling thread alone.
fn plain_here<W, P>(out: &mut W, buffers: Buffers, produce: P) -> Result<Hashed, LayerError>
where
    W: Write,
    P: FnOnce(&mut ChunkWriter) -> Result<(), LayerError>,
{
    let mut w = ChunkWriter::here(out, buffers);
    let produced = produce(&mut w);
    // The first cause wins: a failing output explains the broken pipe the walk then saw.
    match (w.finish_here(), produced) {
        (Err(source), _) => Err(LayerError::WriteLayer { source }),
        (Ok(_), Err(e)) => Err(e),
        (Ok((digest, size)), Ok(())) => Ok(Hashed::plain(digest, size)),
    }
}

/// Hashes the chunks from `input` and writes them to `out`; returns how writing went
/// and the digest and length of what was written. On a write error the channel is
/// dropped, which stops the stages feeding it.
fn drain<W: Write>(
    input: Receiver<Chunk>,
    out: &mut W,
    buffers: Buffers,
) -> (io::Result<()>, Digest, u64) {
    let mut digester = Digester::new();
    let mut written = Ok(());
    for chunk in &input {
        digester.update(&chunk);
        if let Err(source) = out.write_all(&chunk) {
            written = Err(source);
            break;
        }
        buffers.recycle(chunk);
    }
    drop(input);
    let size = digester.len();
    (written, digester.finish(), size)
}

/// Compresses the chunks from `input` into one zstd frame sent to `output` in chunks.
///
/// zstd always runs in multithreaded mode: its output is the same for any number of
/// workers ≥ 1 (but differs from single-threaded mode), so digests do not depend on the
/// machine. Compressed bytes go straight into pooled chunk buffers, with no copy through
/// an intermediate writer's small buffer.
fn zstd(
    input: Receiver<Chunk>,
    output: Sender<Chunk>,
    level: i32,
    workers: usize,
    buffers: Buffers,
) -> io::Result<()> {
    use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};

    let mut enc = Encoder::new(level)?;
    // zstd starts a job only when a worker is idle, so a core whose worker just finished
    // waits until this thread hands it the next job; two spare workers hold jobs ready.
    let workers = u32::try_from(workers + 2).unwrap_or(u32::MAX);
    enc.set_parameter(CParameter::NbWorkers(workers))?;
    let mut out = buffers.take();
    let send = |out: &mut Vec<u8>| {
        let full = std::mem::replace(out, buffers.take());
        output.send(Arc::new(full)).map_err(|_| consumer_gone())
    };
    for chunk in input {
        let mut src = InBuffer::around(&chunk);
        while src.pos < src.src.len() {
            if out.len() == out.capacity() {
                send(&mut out)?;
            }
            let pos = out.len();
            enc.run(&mut src, &mut OutBuffer::around_pos(&mut out, pos))?;
        }
        buffers.recycle(chunk);
    }
    loop {
        if out.len() == out.capacity() {
            send(&mut out)?;
        }
        let pos = out.len();
        if enc.finish(&mut OutBuffer::around_pos(&mut out, pos), true)? == 0 {
            break;
        }
    }
    if !out.is_empty() {
        send(&mut out)?;
    }
    buffers.give(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Runs `threads` bodies at once, each inside `enter`, and returns the most that
    /// were inside together.
    fn most_at_once(threads: usize, enter: impl Fn(&(dyn Fn() + Sync)) + Sync) -> usize {
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let body = || {
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(30));
            inside.fetch_sub(1, Ordering::SeqCst);
        };
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| enter(&body));
            }
        });
        most.into_inner()
    }

    #[test]
    fn the_gate_lets_limit_passes_in_at_once() {
        let gate = Gate::new();
        let most = most_at_once(6, |body| {
            let _turn = gate.enter(2);
            body();
        });
        assert_eq!(most, 2);
        assert_eq!(*gate.count(), 0, "every turn was given back");
    }

    #[test]
    fn passes_beyond_the_cores_wait_their_turn() {
        let workers = thread::available_parallelism().map_or(1, |n| n.get());
        let most = most_at_once(workers * 3, |body| {
            let mut out = Vec::new();
            run(&mut out, Compression::None, 0, |w| {
                body();
                w.write_all(b"data")
                    .map_err(|source| LayerError::WriteLayer { source })
            })
            .unwrap();
        });
        assert!(most <= workers, "{most} passes at once on {workers} cores");
    }

    #[test]
    fn the_spare_buffers_stay_within_their_limit() {
        for _ in 0..SPARE_LIMIT + 3 {
            Buffers.give(Vec::with_capacity(CHUNK_SIZE));
        }
        // Other tests' passes take and give buffers meanwhile; none may pass the limit.
        assert!(Buffers::spare().len() <= SPARE_LIMIT);
        // Only whole chunk buffers are kept.
        Buffers::spare().clear();
        Buffers.give(Vec::with_capacity(10));
        assert!(Buffers::spare().iter().all(|b| b.capacity() == CHUNK_SIZE));
    }

    /// A stream of `len` bytes that is not a repetition of a chunk, produced the way
    /// the tar writer does it: some written, some copied from a reader, some padding.
    fn produce(
        len: usize,
    ) -> (
        Vec<u8>,
        impl FnOnce(&mut ChunkWriter) -> Result<(), LayerError> + Send,
    ) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&data);
        expected.extend_from_slice(&[0; 1000]);
        let produce = move |w: &mut ChunkWriter| {
            let write = |source| LayerError::WriteLayer { source };
            w.write_all(b"head").map_err(write)?;
            let copied = w.copy_from(&mut data.as_slice(), u64::MAX).map_err(write)?;
            assert_eq!(copied, data.len() as u64);
            w.zeros(1000).map_err(write)
        };
        (expected, produce)
    }

    #[test]
    fn both_plain_passes_write_and_hash_the_stream_unchanged() {
        let len = 3 * CHUNK_SIZE + 12_345;
        for here in [false, true] {
            let (expected, produce) = produce(len);
            let mut out = Vec::new();
            let hashed = if here {
                plain_here(&mut out, Buffers, produce)
            } else {
                plain_threads(&mut out, Buffers, produce)
            }
            .unwrap();
            assert!(out == expected, "here: {here}");
            assert_eq!(hashed.diff_id, Digest::of(&expected), "here: {here}");
            assert_eq!(hashed.digest, hashed.diff_id);
            assert_eq!(
                (hashed.size, hashed.diff_size),
                (len as u64 + 1004, len as u64 + 1004)
            );
        }
    }

    /// An output that takes `room` bytes and then fails.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = data.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_the_error_of_both_plain_passes() {
        for here in [false, true] {
            let (_, produce) = produce(4 * CHUNK_SIZE);
            let mut out = Full { room: CHUNK_SIZE };
            let result = if here {
                plain_here(&mut out, Buffers, produce)
            } else {
                plain_threads(&mut out, Buffers, produce)
            };
            match result {
                Err(LayerError::WriteLayer { source }) => {
                    assert_eq!(source.to_string(), "disk full", "here: {here}")
                }
                Err(e) => panic!("here: {here}: {e}"),
                Ok(_) => panic!("here: {here}: wrote to a full output"),
            }
        }
    }
}
