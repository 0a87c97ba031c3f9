//! What pulls and pushes show: bytes and speed per blob.
//!
//! In `tty` mode each blob in flight has a bar with its bytes, total and speed; in
//! `plain` mode a line when a blob starts and one when it ends with its size, time and
//! speed; `rawjson` gives the same as JSON objects; `quiet` shows nothing.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_image::Digest;
use kiln_image::registry::{Transfer, TransferProgress};

use crate::build::progress::ProgressMode;
use crate::human;

struct Blob {
    size: Option<u64>,
    started: Instant,
    done: u64,
    bar: Option<ProgressBar>,
}

/// A display of blob transfers, shared by the transfers of one command.
pub struct TransferDisplay {
    mode: ProgressMode,
    verb: &'static str,
    multi: Option<MultiProgress>,
    blobs: Mutex<HashMap<Digest, Blob>>,
    start: Instant,
}

impl TransferDisplay {
    /// A display in `mode`; `verb` says what happens to blobs ("pull", "push").
    pub fn new(mode: ProgressMode, verb: &'static str) -> TransferDisplay {
        let mode = mode.resolve();
        let multi = (mode == ProgressMode::Tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        TransferDisplay::attached(mode, verb, multi)
    }

    /// A display that draws its bars among `multi`'s (a build's live view).
    pub fn attached(
        mode: ProgressMode,
        verb: &'static str,
        multi: Option<MultiProgress>,
    ) -> TransferDisplay {
        let mode = mode.resolve();
        TransferDisplay {
            mode,
            verb,
            multi,
            blobs: Mutex::new(HashMap::new()),
            start: Instant::now(),
        }
    }

    /// Prints a line beside the bars (nothing in quiet mode).
    pub fn println(&self, line: &str) {
        match (&self.multi, self.mode) {
            (_, ProgressMode::Quiet) => {}
            (Some(multi), _) => {
                let _ = multi.println(line);
            }
            (None, _) => eprintln!("{line}"),
        }
    }

    fn json(&self, digest: &Digest, event: &str, done: u64, size: Option<u64>, secs: f64) {
        let value = serde_json::json!({
            "blob": digest.to_string(),
            "event": event,
            "action": self.verb,
            "bytes": done,
            "total": size,
            "seconds": secs,
            "time": self.start.elapsed().as_secs_f64(),
        });
        let _ = writeln!(io::stderr().lock(), "{value}");
    }
}

/// Bytes per second, as a human size.
fn speed(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!("{}/s", human::size((bytes as f64 / secs) as u64))
}

impl TransferProgress for TransferDisplay {
    fn started(&self, digest: &Digest, size: Option<u64>) {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(match size {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::no_length(),
            });
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12}",
                )
                .expect("the template is valid"),
            );
            bar.set_prefix(format!("{} {}", self.verb, digest.short()));
            bar
        });
        match self.mode {
            ProgressMode::Plain => eprintln!(
                "{} {}: {}",
                self.verb,
                digest.short(),
                size.map_or_else(
                    || "started".to_owned(),
                    |s| format!("{} to go", human::size(s))
                )
            ),
            ProgressMode::Rawjson => self.json(digest, "started", 0, size, 0.0),
            _ => {}
        }
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.insert(
            digest.clone(),
            Blob {
                size,
                started: Instant::now(),
                done: 0,
                bar,
            },
        );
    }

    fn advanced(&self, digest: &Digest, done: u64) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(blob) = blobs.get_mut(digest) {
            blob.done = done;
            if let Some(bar) = &blob.bar {
                bar.set_position(done);
            }
        }
    }

    fn finished(&self, digest: &Digest, how: Transfer) {
        let blob = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        let (done, size, elapsed) = match &blob {
            Some(b) => (b.done, b.size, b.started.elapsed()),
            None => (0, None, Duration::ZERO),
        };
        if let Some(bar) = blob.and_then(|b| b.bar) {
            bar.finish_and_clear();
            if let Some(multi) = &self.multi {
                multi.remove(&bar);
            }
        }
        let word = match how {
            Transfer::Downloaded => "downloaded",
            Transfer::Skipped => "already here",
            Transfer::Existed => "already in the registry",
            Transfer::Mounted => "mounted from another repository",
            Transfer::Uploaded => "uploaded",
        };
        let what = match how {
            Transfer::Downloaded | Transfer::Uploaded => format!(
                "{word} {} in {:.1}s ({})",
                human::size(size.unwrap_or(done).max(done)),
                elapsed.as_secs_f64(),
                speed(done.max(size.unwrap_or(0)), elapsed)
            ),
            _ => word.to_owned(),
        };
        match self.mode {
            ProgressMode::Rawjson => self.json(digest, word, done, size, elapsed.as_secs_f64()),
            _ => self.println(&format!("{} {}: {what}", self.verb, digest.short())),
        }
    }
}
