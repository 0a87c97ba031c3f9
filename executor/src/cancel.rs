//! A cancel token that a blocking wait can sleep on.
//!
//! A running step sleeps in `poll(2)` on its child's pidfd and output pipes. To wake it
//! without polling a flag on a timer, each waiting step registers an eventfd with the
//! token and [`CancelToken::cancel`] writes to every registered one. Creating a token
//! opens nothing, so it is cheap to clone and share across a whole build, and callable
//! from any thread or async task (the CLI cancels it on SIGINT/SIGTERM).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::event::{EventfdFlags, eventfd};

/// Shared, cloneable cancellation flag; cancelling is permanent.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    cancelled: bool,
    next_id: u64,
    wakers: Vec<(u64, Arc<OwnedFd>)>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every request holding this token (or a clone of it).
    pub fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        for (_, fd) in &state.wakers {
            wake(fd);
        }
    }

    /// Whether [`cancel`](Self::cancel) has been called.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// An fd that becomes readable once the token is cancelled (at once if it already
    /// is); it stays registered until the returned waker is dropped.
    pub(crate) fn waker(&self) -> std::io::Result<Waker> {
        let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        let mut state = self.lock();
        if state.cancelled {
            wake(&fd);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.wakers.push((id, Arc::clone(&fd)));
        Ok(Waker {
            token: self.clone(),
            id,
            fd,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one push,
        // one retain or one flag store.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn wake(fd: &OwnedFd) {
    // An eventfd counter only overflows after 2^64-2 writes; a failed write means the
    // counter is already non-zero, so the fd is readable either way.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A registration with a [`CancelToken`]: readable once the token is cancelled.
pub(crate) struct Waker {
    token: CancelToken,
    id: u64,
    fd: Arc<OwnedFd>,
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.token.lock().wakers.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, Timespec, poll};

    fn readable(waker: &Waker) -> bool {
        let mut fds = [PollFd::new(waker, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn cancel_wakes_registered_waiters_and_later_ones() {
        let token = CancelToken::new();
        let waker = token.waker().unwrap();
        assert!(!readable(&waker));
        token.clone().cancel();
        assert!(token.is_cancelled());
        assert!(readable(&waker));
        let late = token.waker().unwrap();
        assert!(readable(&late));
    }

    #[test]
    fn dropped_wakers_unregister() {
        let token = CancelToken::new();
        drop(token.waker().unwrap());
        let kept = token.waker().unwrap();
        assert_eq!(token.lock().wakers.len(), 1);
        drop(kept);
        assert!(token.lock().wakers.is_empty());
    }
}
