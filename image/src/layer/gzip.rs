//! Block-parallel gzip, as pigz does it, because single-threaded deflate is the slowest
//! stage of writing a layer by far (≈30 s for 1 GiB at level 1).
//!
//! The input arrives in chunks; each chunk becomes one run of raw deflate blocks
//! compressed on a worker thread, primed with the last 32 KiB of the previous chunk as
//! its dictionary (so the ratio is that of a single stream), and ended with a sync flush
//! so that the runs concatenate into one valid deflate stream; the last run ends the
//! stream. The CRC-32 of each chunk is computed by its worker and the CRCs are combined
//! in order. The output is one ordinary gzip member: any gunzip reads it, and it depends
//! only on the input and the level, never on the number of workers.
//!
//! Chunks that do not compress (already-compressed files, random data) are written as
//! stored blocks: a trial compression of a sample decides, which costs a few percent of
//! the chunk's time and saves deflate's full search on data it cannot shrink.

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};
use flate2::{Compress, FlushCompress, Status};

use super::pipeline::Chunk;

/// Deflate's window: the dictionary handed from one chunk to the next.
const WINDOW: usize = 32 * 1024;
/// How much of a chunk the trial compression looks at.
const SAMPLE: usize = 64 * 1024;
/// A sample that shrinks less than this (in percent of its size) marks its chunk stored.
const STORED_ABOVE_PERCENT: usize = 97;
/// The gzip header: magic, deflate, no flags, mtime 0 (so output is reproducible),
/// no extra flags, OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    data: Chunk,
    dictionary: Option<Chunk>,
    last: bool,
    reply: Sender<io::Result<Block>>,
}

struct Block {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    /// Uncompressed length, for the trailer.
    len: u64,
}

/// Compresses the chunks read from `input` into one gzip member sent to `output` in
/// pieces, using `workers` threads.
pub(super) fn compress(
    input: Receiver<Chunk>,
    output: Sender<Chunk>,
    level: u32,
    workers: usize,
) -> io::Result<()> {
    let workers = workers.max(1);
    let (job_tx, job_rx) = bounded::<Job>(workers);
    let (order_tx, order_rx) = bounded::<Receiver<io::Result<Block>>>(workers * 2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            s.spawn(move || work(job_rx, level));
        }
        drop(job_rx);
        let collector = s.spawn(move || collect(order_rx, output));

        let dispatched = dispatch(input, job_tx, order_tx);
        let collected = collector.join().expect("gzip collector thread panicked");
        // A collector failure (the consumer went away) explains a dispatch failure.
        collected.and(dispatched)
    })
}

/// Hands chunks to workers in order, holding each back until the next arrives so the
/// last one can be marked as the end of the stream.
fn dispatch(
    input: Receiver<Chunk>,
    jobs: Sender<Job>,
    order: Sender<Receiver<io::Result<Block>>>,
) -> io::Result<()> {
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "gzip output closed");
    let send = |data: Chunk, dictionary: Option<Chunk>, last: bool| -> io::Result<()> {
        let (reply, result) = bounded(1);
        order.send(result).map_err(|_| closed())?;
        jobs.send(Job {
            data,
            dictionary,
            last,
            reply,
        })
        .map_err(|_| closed())
    };
    let mut previous: Option<Chunk> = None;
    let mut held: Option<Chunk> = None;
    for chunk in input {
        if let Some(data) = held.replace(chunk) {
            send(data.clone(), previous.replace(data), false)?;
        }
    }
    send(held.unwrap_or_default(), previous, true)
}

/// Compresses jobs until the dispatcher stops. Every compression starts from a new
/// `Compress`: `Compress::reset` leaves state behind that changes the next output, which
/// would make a block depend on what its worker compressed before, and so the layer on
/// the number of workers and their timing.
fn work(jobs: Receiver<Job>, level: u32) {
    let mut scratch = Vec::new();
    for job in jobs {
        let compressible =
            level > 0 && is_compressible(&mut scratch, &job.data[..job.data.len().min(SAMPLE)]);
        let level = if compressible {
            flate2::Compression::new(level)
        } else {
            flate2::Compression::none()
        };
        let result = compress_chunk(level, &job);
        // The collector may have stopped after an earlier failure; nothing to report to.
        let _ = job.reply.send(result);
    }
}

fn is_compressible(scratch: &mut Vec<u8>, sample: &[u8]) -> bool {
    let mut trial = Compress::new(flate2::Compression::fast(), false);
    scratch.clear();
    if deflate_into(&mut trial, sample, FlushCompress::Finish, scratch).is_err() {
        return true;
    }
    scratch.len() * 100 < sample.len() * STORED_ABOVE_PERCENT
}

fn compress_chunk(level: flate2::Compression, job: &Job) -> io::Result<Block> {
    let mut c = Compress::new(level, false);
    if let Some(dict) = &job.dictionary {
        c.set_dictionary(&dict[dict.len().saturating_sub(WINDOW)..])
            .map_err(io::Error::other)?;
    }
    let mut bytes = Vec::new();
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    deflate_into(&mut c, &job.data, flush, &mut bytes)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.data);
    Ok(Block {
        bytes,
        crc,
        len: job.data.len() as u64,
    })
}

/// Deflates all of `input` into `out`, ending with `flush`.
fn deflate_into(
    c: &mut Compress,
    input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // Stored blocks add 5 bytes per 64 KiB; leave room for that and the flush markers.
    out.reserve(input.len() + input.len() / 1024 + 64);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = (c.total_in() - start) as usize;
        let status = c
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let consumed = (c.total_in() - start) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            _ if flush != FlushCompress::Finish && consumed == input.len() && room_left => {
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Emits the header, the workers' blocks in order, and the trailer (CRC-32 and length
/// modulo 2³², little-endian).
fn collect(order: Receiver<Receiver<io::Result<Block>>>, output: Sender<Chunk>) -> io::Result<()> {
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "gzip consumer went away");
    output
        .send(Arc::new(HEADER.to_vec()))
        .map_err(|_| closed())?;
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    for pending in order {
        let block = pending
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))??;
        crc.combine(&block.crc);
        total += block.len;
        output.send(Arc::new(block.bytes)).map_err(|_| closed())?;
    }
    let mut trailer = Vec::with_capacity(8);
    trailer.extend_from_slice(&crc.clone().finalize().to_le_bytes());
    trailer.extend_from_slice(&(total as u32).to_le_bytes());
    output.send(Arc::new(trailer)).map_err(|_| closed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(chunks: Vec<Vec<u8>>, level: u32, workers: usize) -> Vec<u8> {
        let (in_tx, in_rx) = bounded(chunks.len() + 1);
        for c in chunks {
            in_tx.send(Arc::new(c)).unwrap();
        }
        drop(in_tx);
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        compress(in_rx, out_tx, level, workers).unwrap();
        out_rx.iter().flat_map(|c| c.to_vec()).collect()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_mixed_chunks() {
        let text: Vec<u8> = b"the quick brown fox ".repeat(60_000);
        let chunks = vec![
            text[..700_000].to_vec(),
            noise(300_000, 7),
            text[5..].to_vec(),
            vec![],
        ];
        let whole: Vec<u8> = chunks.concat();
        for level in [0, 1, 6, 9] {
            let gz = gzip(chunks.clone(), level, 3);
            assert_eq!(gunzip(&gz), whole, "level {level}");
        }
        let gz = gzip(chunks.clone(), 1, 2);
        assert!(
            gz.len() < whole.len() / 2,
            "{} of {}",
            gz.len(),
            whole.len()
        );
    }

    #[test]
    fn output_does_not_depend_on_worker_count() {
        let chunks: Vec<Vec<u8>> = (0..5).map(|i| b"abcabd".repeat(50_000 + i)).collect();
        assert_eq!(gzip(chunks.clone(), 6, 1), gzip(chunks, 6, 4));
    }

    #[test]
    fn blocks_do_not_depend_on_what_a_worker_compressed_before() {
        // One worker, fed the same job after different ones: its block must not change.
        let text = |seed: u64| -> Vec<u8> {
            noise(200_000, seed)
                .iter()
                .flat_map(|&b| [b'a' + b % 7, b'a' + b / 37, b' '])
                .collect()
        };
        let block_after = |earlier: Vec<Vec<u8>>| -> Vec<u8> {
            let (job_tx, job_rx) = bounded(earlier.len() + 1);
            let mut replies = Vec::new();
            for data in earlier.into_iter().chain([text(3)]) {
                let (reply, result) = bounded(1);
                job_tx
                    .send(Job {
                        data: Arc::new(data),
                        dictionary: Some(Arc::new(text(2))),
                        last: false,
                        reply,
                    })
                    .unwrap();
                replies.push(result);
            }
            drop(job_tx);
            work(job_rx, 1);
            let last: Receiver<io::Result<Block>> = replies.pop().unwrap();
            last.recv().unwrap().unwrap().bytes
        };
        let alone = block_after(vec![]);
        assert_eq!(block_after(vec![text(1)]), alone);
        assert_eq!(block_after(vec![noise(1 << 20, 5), text(4)]), alone);
    }

    #[test]
    fn empty_input_is_a_valid_member() {
        assert_eq!(gunzip(&gzip(vec![], 6, 2)), b"");
    }

    #[test]
    fn incompressible_chunks_are_stored_cheaply() {
        let data = noise(1 << 20, 3);
        let gz = gzip(vec![data.clone()], 9, 1);
        assert_eq!(gunzip(&gz), data);
        assert!(gz.len() < data.len() + data.len() / 500, "{}", gz.len());
    }
}
