//! A tar reader for untrusted layers: ustar and GNU headers, PAX extended headers (also
//! global ones, which are skipped) and GNU long names, with every field checked.
//!
//! Written here rather than taken from the `tar` crate because its PAX parser splits
//! records at newlines, which breaks on binary xattr values (`security.capability`
//! often holds a 0x0a byte) that Go's reader, and so Docker's, accept; and because the
//! applier wants each failure as a typed problem. Records are read by their length
//! prefix, as the PAX format defines them. Extension headers are capped in size, so a
//! hostile archive cannot make the reader allocate more than a little.

use std::io::{self, Read};

/// One entry, with its extension headers folded in.
#[derive(Debug, Default)]
pub(super) struct TarEntry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (i64, u32),
    pub size: u64,
    pub device: (u32, u32),
    pub xattrs: Vec<Record>,
}

/// A PAX record or xattr: key and raw value.
pub(super) type Record = (Vec<u8>, Vec<u8>);

/// Why the next header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderProblem {
    /// The archive ends inside a header or inside the previous entry's data.
    #[error("archive is truncated")]
    Truncated,
    /// The header's checksum does not match its bytes.
    #[error("header checksum mismatch (not a tar, or corrupt)")]
    BadChecksum,
    /// A numeric header field is not a number.
    #[error("header field {field} is not a valid number")]
    BadNumber {
        /// The field.
        field: &'static str,
    },
    /// A PAX or GNU extension header is larger than any real one.
    #[error("extension header of {size} bytes is larger than the {EXTENSION_MAX} allowed")]
    ExtensionTooLarge {
        /// Its announced size.
        size: u64,
    },
    /// A PAX record is malformed.
    #[error("malformed PAX record")]
    MalformedPax,
    /// Extension headers with no entry after them.
    #[error("extension headers at the end of the archive describe no entry")]
    DanglingExtension,
    /// Reading failed.
    #[error("read failed")]
    Io(#[source] io::Error),
}

/// The largest PAX or GNU long-name header accepted.
pub const EXTENSION_MAX: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// Reads entries one by one; the current entry's data is read through `Read`.
pub(super) struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub(super) fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    /// The underlying reader (to drain what follows the archive).
    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, or `None` at the end-of-archive marker (or a clean end of input).
    pub(super) fn next_entry(&mut self) -> Result<Option<TarEntry>, HeaderProblem> {
        // Apart: a size field near u64::MAX (an entry whose data was never read) must
        // give a truncated archive, not an overflow.
        self.skip(self.remaining)?;
        self.skip(self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax: Vec<Record> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut extended = false;
        loop {
            let Some(block) = self.header_block()? else {
                return if extended {
                    Err(HeaderProblem::DanglingExtension)
                } else {
                    Ok(None)
                };
            };
            let kind = block[156];
            let size = number(&block[124..136], "size")?;
            match kind {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > EXTENSION_MAX {
                        return Err(HeaderProblem::ExtensionTooLarge { size });
                    }
                    let mut data = vec![0; size as usize];
                    self.read_exact_or_truncated(&mut data)?;
                    self.skip(pad(size))?;
                    extended = true;
                    match kind {
                        b'x' => pax.extend(parse_pax(&data)?),
                        b'g' => {
                            parse_pax(&data)?;
                        }
                        b'L' => long_name = Some(trim_nuls(data)),
                        _ => long_link = Some(trim_nuls(data)),
                    }
                }
                _ => {
                    let mut e = parse_header(&block)?;
                    e.path = long_name.unwrap_or(e.path);
                    e.link = long_link.unwrap_or(e.link);
                    for (key, value) in pax {
                        apply_pax(&mut e, key, value)?;
                    }
                    self.remaining = e.size;
                    self.padding = pad(e.size);
                    return Ok(Some(e));
                }
            }
        }
    }

    fn header_block(&mut self) -> Result<Option<[u8; 512]>, HeaderProblem> {
        let mut block = [0u8; 512];
        let mut got = 0;
        while got < block.len() {
            match self.inner.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(HeaderProblem::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HeaderProblem::Io(e)),
            }
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let stored = number(&block[148..156], "checksum")?;
        let unsigned: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
            return Err(HeaderProblem::BadChecksum);
        }
        Ok(Some(block))
    }

    fn read_exact_or_truncated(&mut self, buf: &mut [u8]) -> Result<(), HeaderProblem> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HeaderProblem::Truncated,
            _ => HeaderProblem::Io(e),
        })
    }

    fn skip(&mut self, n: u64) -> Result<(), HeaderProblem> {
        let copied =
            io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(HeaderProblem::Io)?;
        if copied == n {
            Ok(())
        } else {
            Err(HeaderProblem::Truncated)
        }
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's data; `Ok(0)` at its end, or early if the archive is cut.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A field up to its first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |i| &field[..i])
}

/// An octal field (spaces and NULs around it allowed) or a GNU base-256 one.
fn number(field: &[u8], name: &'static str) -> Result<u64, HeaderProblem> {
    let bad = || HeaderProblem::BadNumber { field: name };
    if field[0] & 0x80 != 0 {
        if field[0] == 0xff {
            return Err(bad()); // negative
        }
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(bad)?;
        }
        return Ok(v);
    }
    let text = cstr(field);
    let digits = text.trim_ascii();
    if digits.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(s, 8).map_err(|_| bad())
}

fn parse_header(b: &[u8; 512]) -> Result<TarEntry, HeaderProblem> {
    let ustar = &b[257..263] == b"ustar\0";
    let name = cstr(&b[0..100]);
    let prefix = if ustar { cstr(&b[345..500]) } else { &[][..] };
    let path = if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    };
    let mtime = number(&b[136..148], "mtime")?;
    Ok(TarEntry {
        path,
        link: cstr(&b[157..257]).to_vec(),
        kind: b[156],
        mode: u32::try_from(number(&b[100..108], "mode")? & 0o7777).expect("masked"),
        uid: number(&b[108..116], "uid")?,
        gid: number(&b[116..124], "gid")?,
        mtime: (
            i64::try_from(mtime).map_err(|_| HeaderProblem::BadNumber { field: "mtime" })?,
            0,
        ),
        size: number(&b[124..136], "size")?,
        device: (
            dev(&b[329..337], "devmajor")?,
            dev(&b[337..345], "devminor")?,
        ),
        xattrs: Vec::new(),
    })
}

fn dev(field: &[u8], name: &'static str) -> Result<u32, HeaderProblem> {
    u32::try_from(number(field, name)?).map_err(|_| HeaderProblem::BadNumber { field: name })
}

/// Parses `"<len> key=value\n"` records by their length prefix.
fn parse_pax(mut data: &[u8]) -> Result<Vec<Record>, HeaderProblem> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break; // some writers pad the header's data with NULs
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(HeaderProblem::MalformedPax)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(HeaderProblem::MalformedPax)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(HeaderProblem::MalformedPax);
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(HeaderProblem::MalformedPax)?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn apply_pax(e: &mut TarEntry, key: Vec<u8>, value: Vec<u8>) -> Result<(), HeaderProblem> {
    let num = |field: &'static str, v: &[u8]| -> Result<u64, HeaderProblem> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(HeaderProblem::BadNumber { field })
    };
    match &key[..] {
        b"path" => e.path = value,
        b"linkpath" => e.link = value,
        b"size" => e.size = num("PAX size", &value)?,
        b"uid" => e.uid = num("PAX uid", &value)?,
        b"gid" => e.gid = num("PAX gid", &value)?,
        b"mtime" => {
            e.mtime =
                parse_pax_time(&value).ok_or(HeaderProblem::BadNumber { field: "PAX mtime" })?
        }
        _ => {
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                e.xattrs.push((name.to_vec(), value));
            }
        }
    }
    Ok(())
}

/// A PAX time: decimal seconds, optionally negative, optionally with a fraction.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    if secs < 0 && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: second -2 plus 0.5 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_may_hold_newlines() {
        let value = b"a\nb=c\n";
        let mut body = b" SCHILY.xattr.user.x=".to_vec();
        body.extend_from_slice(value);
        body.push(b'\n');
        let len = body.len() + 2; // two digits
        let mut data = len.to_string().into_bytes();
        data.extend_from_slice(&body);
        data.extend_from_slice(b"9 path=x\n");
        let got = parse_pax(&data).unwrap();
        assert_eq!(got[0], (b"SCHILY.xattr.user.x".to_vec(), value.to_vec()));
        assert_eq!(got[1], (b"path".to_vec(), b"x".to_vec()));
        assert!(matches!(
            parse_pax(b"99 path=x\n"),
            Err(HeaderProblem::MalformedPax)
        ));
        assert!(matches!(parse_pax(b"x"), Err(HeaderProblem::MalformedPax)));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(number(b"  644 \0\0", "mode").unwrap(), 0o644);
        assert_eq!(number(b"\0\0\0\0\0\0\0\0", "mode").unwrap(), 0);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], "size").unwrap(),
            1 << 32
        );
        assert!(number(&[0xff; 12], "size").is_err());
        assert!(
            number(
                &[
                    0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
                ],
                "size"
            )
            .is_err()
        );
        assert!(number(b"12x4\0\0\0\0", "mode").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
