//! What `kiln build` shows while it works.
//!
//! - `plain`: BuildKit's plain style, one line per event, each prefixed `#N` with the
//!   step's number — what logs and CI want. Chosen by `auto` when stderr is not a
//!   terminal or `CI` is set.
//! - `tty`: a live view, one line per running step with its elapsed time and the last
//!   line of its output, finished steps collapsing to one line each.
//! - `rawjson`: one JSON object per event, for tools.
//! - `quiet`: nothing but errors (and the image ID at the end, printed by the caller).
//!
//! Step output reaches the display from the worker as raw chunks; it is split into
//! lines here, so a step's output is never interleaved mid-line with another's.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_solver::{StepStatus, VertexId};

/// `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise or when `CI` is set.
    Auto,
    /// A live view.
    Tty,
    /// One line per event.
    Plain,
    /// One JSON object per event.
    Rawjson,
    /// Errors only.
    Quiet,
}

impl ProgressMode {
    /// `auto` decided for this process's stderr.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto
                if io::stderr().is_terminal() && std::env::var_os("CI").is_none() =>
            {
                ProgressMode::Tty
            }
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

struct Step {
    number: usize,
    name: String,
    started: Option<Instant>,
    partial: Vec<u8>,
    bar: Option<ProgressBar>,
}

struct State {
    steps: HashMap<VertexId, Step>,
    next: usize,
}

/// The progress display of one build.
pub struct Progress {
    mode: ProgressMode,
    start: Instant,
    state: Mutex<State>,
    multi: Option<MultiProgress>,
}

impl Progress {
    /// A display in `mode` (resolving `auto`).
    pub fn new(mode: ProgressMode) -> Progress {
        let mode = mode.resolve();
        let multi = (mode == ProgressMode::Tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Progress {
            mode,
            start: Instant::now(),
            state: Mutex::new(State {
                steps: HashMap::new(),
                next: 1,
            }),
            multi,
        }
    }

    /// The mode, resolved.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// The live view's bars, in `tty` mode, for other displays to join.
    pub fn multi(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// Shows a step changing status.
    pub fn status(&self, id: VertexId, name: &str, status: &StepStatus) {
        if name.is_empty() {
            // Steps with no name (the empty filesystem of `scratch`) are not shown.
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let step = state.steps.entry(id).or_insert_with(|| {
            let number = state.next;
            state.next += 1;
            Step {
                number,
                name: name.to_owned(),
                started: None,
                partial: Vec::new(),
                bar: None,
            }
        });
        match self.mode {
            ProgressMode::Plain => plain_status(step, status),
            ProgressMode::Tty => self.tty_status(step, status),
            ProgressMode::Rawjson => self.json_event(step, status_word(status), None),
            ProgressMode::Auto | ProgressMode::Quiet => {}
        }
        if let StepStatus::Started = status {
            step.started = Some(Instant::now());
        }
    }

    /// Shows output of a running step.
    pub fn output(&self, id: VertexId, chunk: &[u8]) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(step) = state.steps.get_mut(&id) else {
            return;
        };
        step.partial.extend_from_slice(chunk);
        while let Some(pos) = step.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = step.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.line(step, &text);
        }
    }

    /// Prints a line outside any step (nothing in quiet mode).
    pub fn println(&self, line: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn line(&self, step: &mut Step, text: &str) {
        let since = step.started.map_or(Duration::ZERO, |s| s.elapsed());
        match self.mode {
            ProgressMode::Plain => {
                eprintln!("#{} {:.3} {text}", step.number, since.as_secs_f64())
            }
            ProgressMode::Tty => {
                if let Some(bar) = &step.bar {
                    bar.set_message(text.to_owned());
                }
            }
            ProgressMode::Rawjson => self.json_event(step, "output", Some(text)),
            ProgressMode::Auto | ProgressMode::Quiet => {}
        }
    }

    fn tty_status(&self, step: &mut Step, status: &StepStatus) {
        let Some(multi) = &self.multi else { return };
        match status {
            StepStatus::Started => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg:.dim}")
                        .expect("the template is valid"),
                );
                bar.set_prefix(format!("[+] {}", step.name));
                bar.enable_steady_tick(Duration::from_millis(100));
                step.bar = Some(bar);
            }
            StepStatus::Cached => {
                let _ = multi.println(format!(" => CACHED {}", step.name));
            }
            StepStatus::Done { duration } => {
                if let Some(bar) = step.bar.take() {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let _ = multi.println(format!(" => {} {:.1}s", step.name, duration.as_secs_f64()));
            }
            StepStatus::Failed => {
                if let Some(bar) = step.bar.take() {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let _ = multi.println(format!(" => ERROR {}", step.name));
            }
        }
    }

    fn json_event(&self, step: &Step, event: &str, text: Option<&str>) {
        let value = serde_json::json!({
            "vertex": step.number,
            "name": step.name,
            "event": event,
            "text": text,
            "time": self.start.elapsed().as_secs_f64(),
        });
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "{value}");
    }
}

fn status_word(status: &StepStatus) -> &'static str {
    match status {
        StepStatus::Cached => "cached",
        StepStatus::Started => "started",
        StepStatus::Done { .. } => "done",
        StepStatus::Failed => "error",
    }
}

fn plain_status(step: &Step, status: &StepStatus) {
    let n = step.number;
    match status {
        StepStatus::Started => eprintln!("#{n} {}", step.name),
        StepStatus::Cached => eprintln!("#{n} {}\n#{n} CACHED\n", step.name),
        StepStatus::Done { duration } => eprintln!("#{n} DONE {:.1}s\n", duration.as_secs_f64()),
        StepStatus::Failed => eprintln!("#{n} ERROR\n"),
    }
}
