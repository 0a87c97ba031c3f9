//! Blobs: streamed, resumable, verified downloads into a [`BlobWrite`], and streamed
//! uploads from a [`BlobRead`] (skip if present, cross-repository mount, one `PUT` or
//! `PATCH` chunks).
//!
//! Neither direction holds a blob in memory. A download runs the store's `write_blob`
//! on a blocking thread reading from a bounded channel that the async side fills; an
//! upload reads the store on a blocking thread into a bounded channel and hands slices of
//! it to request bodies. Both hash what passes, so a blob that does not match its digest
//! is refused before the last byte reaches the store or the registry.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Response, Url};
use tokio::sync::mpsc;

use super::client::{place_of, pull_scope, push_scope, read_limited, unexpected};
use super::error::Place;
use super::{PushOutcome, RegistryClient, RegistryError, Transfer, TransferProgress};
use crate::{BlobRead, BlobWrite, Digest, Digester, ImageRef};

/// Pieces in flight between the network and a blocking reader or writer.
const CHANNEL_DEPTH: usize = 8;
/// Size of the pieces read from the store for an upload, and gathered from the network
/// for a download.
const READ_PIECE: usize = 64 << 10;

type Piece = io::Result<Bytes>;

impl RegistryClient {
    /// Whether `repo` has blob `digest` (`HEAD`).
    pub async fn blob_exists(
        &self,
        repo: &ImageRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let http = self.http()?;
        let place = place_of(repo);
        let what = format!("HEAD blob {digest}");
        let url = self.url(repo.domain(), &format!("{}/blobs/{digest}", repo.path()));
        let build = || http.head(&url);
        let response = self
            .request(&place, &[pull_scope(repo)], &what, &build)
            .await?;
        match response.status().as_u16() {
            200..=299 => {
                self.remember_blob(repo, digest);
                Ok(true)
            }
            404 => Ok(false),
            _ => Err(unexpected(&place, &what, response).await),
        }
    }

    /// Fetches a small blob (an image config) into memory, refusing more than `limit`
    /// bytes, verified against `digest`.
    pub async fn get_blob_bytes(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let http = self.http()?;
        let place = place_of(repo);
        let what = format!("blob {digest}");
        let url = self.url(repo.domain(), &format!("{}/blobs/{digest}", repo.path()));
        let build = || http.get(&url);
        let scopes = [pull_scope(repo)];
        let (place_ref, what_ref, scopes_ref, build_ref) = (&place, &what, &scopes, &build);
        let bytes = self
            .retrying(|attempt| async move {
                let (place, what, scopes, build) = (place_ref, what_ref, scopes_ref, build_ref);
                let response = self.send(place, scopes, what, attempt, build).await?;
                if !response.status().is_success() {
                    return Err(unexpected(place, what, response).await);
                }
                read_limited(place, what, response, limit).await
            })
            .await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                place,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Downloads blob `digest` of `repo` into `sink`, unless the sink has it. The
    /// download resumes after a broken connection; bytes that do not hash to `digest`
    /// (or run past `size`) are refused and nothing is stored. Returns the blob's size
    /// (`size`, or 0 when unknown, if the sink already had it).
    pub async fn fetch_blob(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        size: Option<u64>,
        sink: Arc<dyn BlobWrite + Send + Sync>,
        progress: &dyn TransferProgress,
    ) -> Result<u64, RegistryError> {
        if sink.has_blob(digest) {
            progress.finished(digest, Transfer::Skipped);
            return Ok(size.unwrap_or(0));
        }
        progress.started(digest, size);
        let (tx, rx) = mpsc::channel::<Piece>(CHANNEL_DEPTH);
        let expected = digest.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            sink.write_blob(&expected, &mut reader)
        });
        let download = self.download(repo, digest, size, tx, progress).await;
        let stored = writer.await;
        let n = match download {
            // The writer stopped reading: its own error says why.
            Err(DownloadError::SinkGone) | Ok(_) => match stored {
                Ok(Ok(n)) => n,
                Ok(Err(source)) => {
                    return Err(RegistryError::Store {
                        what: "writing",
                        digest: digest.clone(),
                        source,
                    });
                }
                Err(join) => {
                    return Err(RegistryError::Store {
                        what: "writing",
                        digest: digest.clone(),
                        source: io::Error::other(join.to_string()),
                    });
                }
            },
            Err(DownloadError::Registry(e) | DownloadError::Retry(e)) => return Err(e),
        };
        self.remember_blob(repo, digest);
        progress.finished(digest, Transfer::Downloaded);
        Ok(n)
    }

    /// Streams the blob into `tx`, resuming as needed. On failure an error is sent down
    /// the channel first, so the store discards what it has.
    async fn download(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        size: Option<u64>,
        tx: mpsc::Sender<Piece>,
        progress: &dyn TransferProgress,
    ) -> Result<u64, DownloadError> {
        let place = place_of(repo);
        let mut state = Download {
            place: &place,
            digest,
            size,
            done: 0,
            digester: Digester::new(),
            use_range: true,
        };
        let result = self.download_all(repo, &mut state, &tx, progress).await;
        if let Err(DownloadError::Registry(e) | DownloadError::Retry(e)) = &result {
            // Make the store's write fail rather than see a clean end of a short stream.
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        result
    }

    async fn download_all(
        &self,
        repo: &ImageRef,
        state: &mut Download<'_>,
        tx: &mpsc::Sender<Piece>,
        progress: &dyn TransferProgress,
    ) -> Result<u64, DownloadError> {
        let retry = self.options().retry;
        let mut failures = 0;
        loop {
            let before = state.done;
            let e = match self
                .download_once(repo, state, tx, progress, failures + 1)
                .await
            {
                Ok(()) => break,
                Err(DownloadError::Retry(e)) => e,
                Err(DownloadError::Registry(e)) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            // A try that moved forward starts a fresh count: a connection cut every few
            // megabytes still gets the whole blob through.
            failures = if state.done > before { 1 } else { failures + 1 };
            if failures >= retry.attempts {
                return Err(DownloadError::Registry(e));
            }
            tokio::time::sleep(retry.delay(failures)).await;
        }
        let actual = state.digester.clone().finish();
        if actual != *state.digest {
            return Err(DownloadError::Registry(RegistryError::DigestMismatch {
                place: state.place.clone(),
                expected: state.digest.clone(),
                actual,
            }));
        }
        Ok(state.done)
    }

    /// One `GET` of the blob from where the download stands.
    async fn download_once(
        &self,
        repo: &ImageRef,
        state: &mut Download<'_>,
        tx: &mpsc::Sender<Piece>,
        progress: &dyn TransferProgress,
        attempt: u32,
    ) -> Result<(), DownloadError> {
        let http = self.http()?;
        let place = state.place;
        let digest = state.digest;
        let what = format!("GET blob {digest}");
        let url = self.url(repo.domain(), &format!("{}/blobs/{digest}", repo.path()));
        let from = state.done;
        let ranged = from > 0 && state.use_range;
        let build = || {
            let request = http.get(&url);
            if ranged {
                request.header(RANGE, format!("bytes={from}-"))
            } else {
                request
            }
        };
        let mut response = self
            .send(place, &[pull_scope(repo)], &what, attempt, &build)
            .await?;
        // Bytes at the start of the body already delivered (a restart without range).
        let mut skip = match response.status().as_u16() {
            200 => from,
            206 if ranged && content_range_start(&response) == Some(from) => 0,
            206 => {
                // A range we did not ask for: ask again for the whole blob.
                state.use_range = false;
                return Err(DownloadError::Retry(RegistryError::BadHeader {
                    place: place.clone(),
                    what,
                    header: "Content-Range",
                }));
            }
            416 => {
                state.use_range = false;
                return Err(DownloadError::Retry(RegistryError::Status {
                    place: place.clone(),
                    what,
                    status: 416,
                    detail: Default::default(),
                }));
            }
            _ => {
                return Err(DownloadError::Registry(
                    unexpected(place, &what, response).await,
                ));
            }
        };
        if let (Some(size), Some(len)) = (state.size, response.content_length()) {
            let whole = if skip == 0 { from + len } else { len };
            if whole != size {
                return Err(DownloadError::Registry(RegistryError::SizeMismatch {
                    place: place.clone(),
                    digest: digest.clone(),
                    expected: size,
                    actual: whole,
                }));
            }
        }
        // Small network reads are gathered into larger pieces before they cross to the
        // store's thread.
        let mut batch = bytes::BytesMut::new();
        let outcome = loop {
            let mut chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(source) => {
                    break Err(DownloadError::Registry(RegistryError::Transport {
                        place: place.clone(),
                        what,
                        attempts: attempt,
                        source,
                    }));
                }
            };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                let _ = chunk.split_to(n as usize);
                skip -= n;
                if chunk.is_empty() {
                    continue;
                }
            }
            let done = state.done + chunk.len() as u64;
            if let Some(size) = state.size
                && done > size
            {
                return Err(DownloadError::Registry(RegistryError::SizeMismatch {
                    place: place.clone(),
                    digest: digest.clone(),
                    expected: size,
                    actual: done,
                }));
            }
            state.digester.update(&chunk);
            state.done = done;
            let piece = if batch.is_empty() && chunk.len() >= READ_PIECE {
                chunk
            } else {
                batch.extend_from_slice(&chunk);
                if batch.len() < READ_PIECE {
                    continue;
                }
                batch.split().freeze()
            };
            if tx.send(Ok(piece)).await.is_err() {
                return Err(DownloadError::SinkGone);
            }
            progress.advanced(digest, done);
        };
        // What arrived before the end (or a broken connection) is counted: deliver it.
        if !batch.is_empty() {
            if tx.send(Ok(batch.freeze())).await.is_err() {
                return Err(DownloadError::SinkGone);
            }
            progress.advanced(digest, state.done);
        }
        outcome?;
        match state.size {
            Some(size) if state.done < size || skip > 0 => {
                Err(DownloadError::Registry(RegistryError::Truncated {
                    place: place.clone(),
                    digest: digest.clone(),
                    expected: size,
                    actual: state.done,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Pushes blob `digest` (`size` bytes, read from `source`) to `repo`: nothing if the
    /// registry has it, a mount if one of `mount_from` (same registry) has it and the
    /// registry agrees, else an upload. A broken upload starts again from the beginning.
    pub async fn push_blob(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobRead + Send + Sync>,
        mount_from: &[ImageRef],
        progress: &dyn TransferProgress,
    ) -> Result<PushOutcome, RegistryError> {
        progress.started(digest, Some(size));
        let outcome = self
            .push_blob_inner(repo, digest, size, source, mount_from, progress)
            .await?;
        self.remember_blob(repo, digest);
        progress.finished(digest, outcome.into());
        Ok(outcome)
    }

    async fn push_blob_inner(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobRead + Send + Sync>,
        mount_from: &[ImageRef],
        progress: &dyn TransferProgress,
    ) -> Result<PushOutcome, RegistryError> {
        if self.blob_exists(repo, digest).await? {
            return Ok(PushOutcome::Existed);
        }
        for from in mount_from
            .iter()
            .filter(|f| f.domain() == repo.domain() && f.path() != repo.path())
        {
            if self.mount(repo, digest, from).await? {
                return Ok(PushOutcome::Mounted);
            }
        }
        self.retrying(|attempt| {
            let source = source.clone();
            async move {
                // The last try may have stored the blob with its answer lost.
                if attempt > 1 && self.blob_exists(repo, digest).await? {
                    return Ok(PushOutcome::Uploaded);
                }
                progress.advanced(digest, 0);
                self.upload(repo, digest, size, source, progress, attempt)
                    .await
                    .map(|()| PushOutcome::Uploaded)
            }
        })
        .await
    }

    /// Asks the registry to link `digest` from `from` into `repo`; true if it did.
    async fn mount(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        from: &ImageRef,
    ) -> Result<bool, RegistryError> {
        let http = self.http()?;
        let place = place_of(repo);
        let what = format!("mount {digest} from {}", from.path());
        let base = self.url(repo.domain(), &format!("{}/blobs/uploads/", repo.path()));
        let mut url = Url::parse(&base).map_err(|_| RegistryError::BadReference {
            reference: repo.to_string(),
            reason: "cannot form a registry URL",
        })?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.path());
        let build = || http.post(url.clone()).header(CONTENT_LENGTH, "0");
        let scopes = [push_scope(repo), pull_scope(from)];
        let response = match self.request(&place, &scopes, &what, &build).await {
            Ok(r) => r,
            // No right to read the source: no mount, but the upload may still work.
            Err(RegistryError::Unauthorized { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match response.status().as_u16() {
            201 => Ok(true),
            202 => {
                // The registry opened an upload session instead; close it.
                if let Ok(location) = location(&place, &what, &base, &response) {
                    let build = || http.delete(location.clone());
                    let _ = self
                        .request(&place, &[push_scope(repo)], &what, &build)
                        .await;
                }
                Ok(false)
            }
            _ => Err(unexpected(&place, &what, response).await),
        }
    }

    /// One upload of the whole blob: open a session, send the bytes, commit.
    async fn upload(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobRead + Send + Sync>,
        progress: &dyn TransferProgress,
        attempt: u32,
    ) -> Result<(), RegistryError> {
        let http = self.http()?;
        let place = place_of(repo);
        let scopes = [push_scope(repo)];
        let what = format!("start upload of {digest}");
        let base = self.url(repo.domain(), &format!("{}/blobs/uploads/", repo.path()));
        let build = || http.post(&base).header(CONTENT_LENGTH, "0");
        let response = self.send(&place, &scopes, &what, attempt, &build).await?;
        if response.status().as_u16() != 202 {
            return Err(unexpected(&place, &what, response).await);
        }
        let mut session = location(&place, &what, &base, &response)?;
        let mut feed = Feed::open(source, digest.clone(), size, place.clone());
        let chunk = self.options().chunk_size.filter(|&c| c > 0 && c < size);
        let Some(chunk) = chunk else {
            let what = format!("PUT blob {digest}");
            let mut url = session;
            url.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let response = self
                .send_streamed(
                    &place,
                    &scopes,
                    &what,
                    attempt,
                    &mut feed,
                    progress,
                    size,
                    |body| {
                        http.put(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, size)
                            .body(body)
                    },
                )
                .await?;
            if response.status().as_u16() != 201 {
                return Err(unexpected(&place, &what, response).await);
            }
            return Ok(());
        };
        let mut sent = 0;
        while sent < size {
            let n = chunk.min(size - sent);
            let what = format!("PATCH blob {digest} bytes {sent}-{}", sent + n - 1);
            let range = format!("{sent}-{}", sent + n - 1);
            let target = session.clone();
            let response = self
                .send_streamed(
                    &place,
                    &scopes,
                    &what,
                    attempt,
                    &mut feed,
                    progress,
                    n,
                    |body| {
                        http.patch(target.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, n)
                            .body(body)
                    },
                )
                .await?;
            if response.status().as_u16() != 202 {
                return Err(unexpected(&place, &what, response).await);
            }
            sent += n;
            if let Some(end) = range_end(&response)
                && end + 1 != sent
            {
                return Err(RegistryError::Truncated {
                    place: place.clone(),
                    digest: digest.clone(),
                    expected: sent,
                    actual: end + 1,
                });
            }
            session = location(&place, &what, session.as_str(), &response)?;
        }
        feed.finish()?;
        let what = format!("commit upload of {digest}");
        let mut url = session;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let build = || http.put(url.clone()).header(CONTENT_LENGTH, "0");
        let response = self.send(&place, &scopes, &what, attempt, &build).await?;
        if response.status().as_u16() != 201 {
            return Err(unexpected(&place, &what, response).await);
        }
        Ok(())
    }

    /// Sends one request whose body is the next `len` bytes of `feed`.
    #[allow(clippy::too_many_arguments)]
    async fn send_streamed(
        &self,
        place: &Place,
        scopes: &[String],
        what: &str,
        attempt: u32,
        feed: &mut Feed,
        progress: &dyn TransferProgress,
        len: u64,
        build: impl FnOnce(reqwest::Body) -> reqwest::RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let authorization = self.authorization(place, scopes).await?;
        let (tx, rx) = mpsc::channel::<Piece>(2);
        let mut request = build(reqwest::Body::wrap(ChannelBody { rx, len }));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let (sent, fed) = tokio::join!(request.send(), feed.forward(len, tx, progress));
        // A failure of the source (unreadable, wrong size or digest) explains a broken
        // request better than the request's own error does.
        fed?;
        let response = sent.map_err(|source| RegistryError::Transport {
            place: place.clone(),
            what: what.to_owned(),
            attempts: attempt,
            source,
        })?;
        match response.status().as_u16() {
            status @ (401 | 403) => Err(RegistryError::Unauthorized {
                place: place.clone(),
                status,
                detail: super::client::error_message(response).await,
            }),
            status @ (429 | 500..) => Err(RegistryError::Status {
                place: place.clone(),
                what: what.to_owned(),
                status,
                detail: super::client::error_message(response).await,
            }),
            _ => Ok(response),
        }
    }
}

/// Why a download stopped.
enum DownloadError {
    Registry(RegistryError),
    /// The registry answered a range request wrongly: try again without a range.
    Retry(RegistryError),
    /// The store stopped reading (it failed; its error is the one to report).
    SinkGone,
}

impl From<RegistryError> for DownloadError {
    fn from(e: RegistryError) -> DownloadError {
        DownloadError::Registry(e)
    }
}

/// Where a download stands.
struct Download<'a> {
    place: &'a Place,
    digest: &'a Digest,
    size: Option<u64>,
    /// Bytes delivered to the store so far.
    done: u64,
    digester: Digester,
    /// False once the registry has shown it does not honour ranges properly.
    use_range: bool,
}

/// The first byte position of a `Content-Range: bytes a-b/n` answer.
fn content_range_start(response: &Response) -> Option<u64> {
    let text = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = text.trim().strip_prefix("bytes ")?;
    spec.split('-').next()?.trim().parse().ok()
}

/// The last byte position of an upload's `Range: 0-b` answer.
fn range_end(response: &Response) -> Option<u64> {
    let text = response.headers().get(RANGE)?.to_str().ok()?;
    let text = text.trim();
    let text = text.strip_prefix("bytes=").unwrap_or(text);
    text.split('-').nth(1)?.trim().parse().ok()
}

/// The upload session URL of a `Location` header, resolved against `base`.
fn location(
    place: &Place,
    what: &str,
    base: &str,
    response: &Response,
) -> Result<Url, RegistryError> {
    let bad = || RegistryError::BadHeader {
        place: place.clone(),
        what: what.to_owned(),
        header: "Location",
    };
    let text = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let base = Url::parse(base).map_err(|_| bad())?;
    let url = base.join(text).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad());
    }
    Ok(url)
}

/// A blocking reader over pieces sent by the async side; an error piece fails the read.
struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A request body of exactly `len` bytes arriving through a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Piece>,
    len: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// A blob read from the store on a blocking thread, handed out in slices of chosen
/// lengths, hashed and counted on the way.
struct Feed {
    rx: mpsc::Receiver<Piece>,
    pending: Bytes,
    digester: Digester,
    digest: Digest,
    size: u64,
    place: Place,
}

impl Feed {
    fn open(
        source: Arc<dyn BlobRead + Send + Sync>,
        digest: Digest,
        size: u64,
        place: Place,
    ) -> Feed {
        let (tx, rx) = mpsc::channel::<Piece>(CHANNEL_DEPTH);
        let d = digest.clone();
        // Ends when the blob is read or the feed is dropped (the send fails).
        drop(tokio::task::spawn_blocking(move || {
            let mut reader = match source.open_blob(&d) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0; READ_PIECE];
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }));
        Feed {
            rx,
            pending: Bytes::new(),
            digester: Digester::new(),
            digest,
            size,
            place,
        }
    }

    /// Sends the next `len` bytes into `tx`. On a source failure an error piece goes to
    /// `tx` too, so that the request carrying them is abandoned rather than completed.
    async fn forward(
        &mut self,
        len: u64,
        tx: mpsc::Sender<Piece>,
        progress: &dyn TransferProgress,
    ) -> Result<(), RegistryError> {
        let result = self.forward_inner(len, &tx, progress).await;
        if let Err(e) = &result {
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        result
    }

    async fn forward_inner(
        &mut self,
        len: u64,
        tx: &mpsc::Sender<Piece>,
        progress: &dyn TransferProgress,
    ) -> Result<(), RegistryError> {
        let mut left = len;
        while left > 0 {
            if self.pending.is_empty() {
                self.pending = match self.rx.recv().await {
                    Some(Ok(piece)) => piece,
                    Some(Err(source)) => {
                        return Err(RegistryError::Store {
                            what: "reading",
                            digest: self.digest.clone(),
                            source,
                        });
                    }
                    None => return Err(self.size_error(self.digester.len())),
                };
                continue;
            }
            let n = left.min(self.pending.len() as u64) as usize;
            let piece = self.pending.split_to(n);
            self.digester.update(&piece);
            left -= n as u64;
            if self.digester.len() == self.size {
                self.finish()?;
            }
            if tx.send(Ok(piece)).await.is_err() {
                // The request is over (failed or answered early): its result tells.
                return Ok(());
            }
            progress.advanced(&self.digest, self.digester.len());
        }
        Ok(())
    }

    /// Checks that everything was read and hashes to the digest; the blob must not be
    /// committed otherwise.
    fn finish(&mut self) -> Result<(), RegistryError> {
        if self.digester.len() != self.size || !self.pending.is_empty() {
            return Err(self.size_error(self.digester.len() + self.pending.len() as u64));
        }
        let actual = self.digester.clone().finish();
        if actual != self.digest {
            return Err(RegistryError::DigestMismatch {
                place: self.place.clone(),
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    fn size_error(&self, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            place: self.place.clone(),
            digest: self.digest.clone(),
            expected: self.size,
            actual,
        }
    }
}
