//! Writes a directory as a layer blob, for benchmarks and manual checks:
//! `mklayer [--compression gzip|zstd|none] [--level N] [--overlay] DIR OUT`.
//! Prints the blob's digest, size, diffID and uncompressed size.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_image::Compression;
use kiln_image::layer::{Source, WriteOptions, write_layer};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("mklayer: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut options = WriteOptions::default();
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--compression" => {
                options.compression = match args.next().as_deref() {
                    Some("gzip") => Compression::Gzip,
                    Some("zstd") => Compression::Zstd,
                    Some("none") => Compression::None,
                    other => return Err(format!("unknown compression {other:?}")),
                }
            }
            "--level" => {
                let level = args.next().and_then(|l| l.parse().ok());
                options.level = Some(level.ok_or("--level needs a number")?);
            }
            "--overlay" => options.source = Source::OverlayUpper,
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [dir, out] = &paths[..] else {
        return Err(
            "usage: mklayer [--compression gzip|zstd|none] [--level N] [--overlay] DIR OUT".into(),
        );
    };
    let file = File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let desc = write_layer(dir, &mut w, &options).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg += &format!(": {s}");
            source = s.source();
        }
        msg
    })?;
    // Flushed, not synced: the shell pipelines it is compared with do not sync either.
    w.into_inner()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!(
        "{} {} {} {}",
        desc.digest, desc.size, desc.diff_id, desc.diff_size
    );
    Ok(())
}
