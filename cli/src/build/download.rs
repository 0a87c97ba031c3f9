//! `ADD <url>`: the file is fetched over HTTP(S) into the build's scratch space and
//! becomes a one-layer filesystem holding it, which the ADD step then copies from.
//!
//! As in BuildKit, the file is named after the URL's last path element, has mode 0600
//! and the server's `Last-Modified` time; `--checksum` is checked while the bytes
//! arrive and a mismatch fails the step with nothing kept. The download is repeated on
//! every build (the server decides what the URL holds), but an unchanged file makes
//! the same layer, so the steps after it stay cached.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use kiln_image::{Digest, Digester};

/// How long a download may stall before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches `url` into `dir/filename`; checks `checksum` when given.
pub async fn fetch(
    url: &str,
    checksum: Option<&Digest>,
    dir: &Path,
    filename: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("setting up the HTTP client")?;
    let mut response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?;
    if !response.status().is_success() {
        bail!("fetching {url}: the server answered {}", response.status());
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date);
    let path = dir.join(filename);
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut digester = Digester::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        digester.update(&chunk);
        file.write_all(&chunk)?;
    }
    let actual = digester.finish();
    if let Some(expected) = checksum
        && *expected != actual
    {
        bail!("{url}: checksum mismatch: expected {expected}, got {actual}");
    }
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    if let Some(time) = modified {
        file.set_modified(time)?;
    }
    file.sync_all()?;
    drop(file);
    fs::metadata(&path)?;
    Ok(())
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the only form servers send
/// today).
fn http_date(text: &str) -> Option<SystemTime> {
    let ts = jiff::fmt::rfc2822::parse(text).ok()?;
    let secs = ts.timestamp().as_second();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(http_date("yesterday").is_none());
    }
}
