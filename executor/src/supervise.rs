//! Waiting on a running container: output, exit, cancellation and timeout in one loop.
//!
//! The runtime process is our child; one `poll(2)` sleeps on its pidfd, its stdout and
//! stderr pipes and the cancel token's eventfd, with the time left before the deadline as
//! timeout. So one thread serves a step, output reaches the sink as soon as it is
//! written, and a cancel or a timeout is acted on at once rather than at the next tick.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::cancel::CancelToken;
use crate::request::{ExecOutput, OutputStream};

/// How long to keep reading output after the process exited, for pipes that a
/// straggler still holds open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How much output is kept for an error message.
const TAIL_BYTES: usize = 16 * 1024;

/// Lines of output an error message shows.
pub(crate) const TAIL_LINES: usize = 20;

/// How a supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It exited with this code (128 + signal number when killed by a signal).
    Exited(i32),
    /// The cancel token fired first.
    Cancelled,
    /// The deadline passed first.
    TimedOut,
}

/// The last bytes of a process's output, both streams interleaved as they came.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(TAIL_BYTES);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    /// The last `lines` lines, lossily decoded.
    pub(crate) fn lines(&self, lines: usize) -> String {
        let (a, b) = self.bytes.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Where output goes while supervising.
pub(crate) struct Sinks<'a> {
    /// The caller's sink, if any.
    pub output: Option<&'a mut dyn ExecOutput>,
    /// The tail kept for errors.
    pub tail: &'a mut Tail,
}

impl Sinks<'_> {
    fn write(&mut self, stream: OutputStream, chunk: &[u8]) {
        self.tail.push(chunk);
        if let Some(output) = self.output.as_mut() {
            output.write(stream, chunk);
        }
    }
}

/// Streams `child`'s output to `sinks` until it exits, `cancel` fires or `deadline`
/// passes. The child is not killed here; the caller owns that decision.
pub(crate) fn supervise(
    child: &mut Child,
    sinks: &mut Sinks<'_>,
    deadline: Option<Instant>,
    cancel: &CancelToken,
) -> io::Result<Ending> {
    let pidfd = child_pidfd(child)?;
    let waker = cancel.waker()?;
    let mut pipes: Vec<(OutputStream, File)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        pipes.push((OutputStream::Stdout, File::from(OwnedFd::from(out))));
    }
    if let Some(err) = child.stderr.take() {
        pipes.push((OutputStream::Stderr, File::from(OwnedFd::from(err))));
    }
    let mut exit: Option<(ExitStatus, Instant)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some((status, at)) = exit
            && (pipes.is_empty() || at.elapsed() >= DRAIN_AFTER_EXIT)
        {
            return Ok(Ending::Exited(exit_code(status)));
        }
        if cancel.is_cancelled() {
            return Ok(Ending::Cancelled);
        }
        let now = Instant::now();
        let mut wait_for = deadline.map(|d| d.saturating_duration_since(now));
        if exit.is_none() && wait_for == Some(Duration::ZERO) {
            return Ok(Ending::TimedOut);
        }
        if let Some((_, at)) = exit {
            let drain_left = DRAIN_AFTER_EXIT.saturating_sub(at.elapsed());
            wait_for = Some(wait_for.map_or(drain_left, |w| w.min(drain_left)));
        }

        let mut fds: Vec<PollFd<'_>> = pipes
            .iter()
            .map(|(_, pipe)| PollFd::new(pipe, PollFlags::IN))
            .collect();
        fds.push(PollFd::new(&waker, PollFlags::IN));
        if exit.is_none() {
            fds.push(PollFd::new(&pidfd, PollFlags::IN));
        }
        let timeout = wait_for.map(|d| Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);

        if exit.is_none() && ready[pipes.len() + 1] {
            let status = child.wait()?;
            exit = Some((status, Instant::now()));
        }
        let mut closed = Vec::new();
        for (i, (stream, pipe)) in pipes.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            match pipe.read(&mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => sinks.write(*stream, &buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        for i in closed.into_iter().rev() {
            pipes.remove(i);
        }
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it still runs.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let pidfd = child_pidfd(child)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return child.try_wait(),
            Ok(_) => return child.wait().map(Some),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

fn child_pidfd(child: &Child) -> io::Result<OwnedFd> {
    let raw =
        i32::try_from(child.id()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(pidfd_open(pid, PidfdFlags::empty())?)
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    fn spawn(script: &str) -> Child {
        Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    type Seen = Arc<Mutex<Vec<(OutputStream, Vec<u8>)>>>;

    fn run(script: &str, deadline: Option<Instant>, cancel: &CancelToken) -> (Ending, Seen, Tail) {
        let mut child = spawn(script);
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        let mut output = move |stream: OutputStream, chunk: &[u8]| {
            record.lock().unwrap().push((stream, chunk.to_vec()));
        };
        let mut tail = Tail::default();
        let ending = supervise(
            &mut child,
            &mut Sinks {
                output: Some(&mut output),
                tail: &mut tail,
            },
            deadline,
            cancel,
        )
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        (ending, seen, tail)
    }

    fn joined(seen: &Seen, stream: OutputStream) -> String {
        let seen = seen.lock().unwrap();
        let bytes: Vec<u8> = seen
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, c)| c.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn output_and_exit_code_are_reported() {
        let (ending, seen, tail) = run("echo out; echo err >&2; exit 3", None, &CancelToken::new());
        assert_eq!(ending, Ending::Exited(3));
        assert_eq!(joined(&seen, OutputStream::Stdout), "out\n");
        assert_eq!(joined(&seen, OutputStream::Stderr), "err\n");
        assert!(tail.lines(5).contains("err"));
    }

    #[test]
    fn a_deadline_ends_the_wait() {
        let start = Instant::now();
        let deadline = Some(start + Duration::from_millis(200));
        let (ending, _, _) = run("sleep 10", deadline, &CancelToken::new());
        assert_eq!(ending, Ending::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn cancelling_from_another_thread_ends_the_wait() {
        let cancel = CancelToken::new();
        let remote = cancel.clone();
        let start = Instant::now();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            remote.cancel();
        });
        let (ending, _, _) = run("echo started; sleep 10", None, &cancel);
        canceller.join().unwrap();
        assert_eq!(ending, Ending::Cancelled);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_background_process_holding_the_pipe_does_not_hang_the_wait() {
        let start = Instant::now();
        let (ending, _, _) = run("sleep 30 & exit 0", None, &CancelToken::new());
        assert_eq!(ending, Ending::Exited(0));
        assert!(start.elapsed() < DRAIN_AFTER_EXIT + Duration::from_secs(1));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(tail.lines(2), "line 9998\nline 9999");
        assert!(tail.bytes.len() <= TAIL_BYTES);
    }

    #[test]
    fn wait_exit_times_out_then_sees_the_exit() {
        let mut child = spawn("sleep 10");
        assert_eq!(
            wait_exit(&mut child, Duration::from_millis(50)).unwrap(),
            None
        );
        child.kill().unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(exit_code(status), 128 + 9);
    }
}
