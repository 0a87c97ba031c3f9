//! A TCP proxy on 127.0.0.1 that breaks HTTP traffic to a registry on purpose: it can
//! cut a connection after some bytes of the request or the response, flip a byte of a
//! response body, or answer 503 instead of forwarding.
//!
//! Each request gets its own upstream connection (the proxy rewrites the request to
//! `Connection: close`), so "the first K connections" and "the first K requests" are the
//! same thing, and a fault applies to exactly one request. Faults can be limited to
//! requests whose method and path match. Uses only std.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One kind of fault, applied to the next `times` matching requests.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Close both sides after `bytes` bytes of the response (headers included).
    CutResponse { bytes: usize },
    /// Close both sides after `bytes` bytes of the request (headers included) have
    /// been forwarded.
    CutRequest { bytes: usize },
    /// Invert byte `offset` of the response body (when the body is that long).
    FlipBody { offset: usize },
    /// Answer `503 Service Unavailable` without asking the registry.
    Unavailable,
}

/// A fault with the requests it applies to.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    /// How many more matching requests it applies to.
    pub times: usize,
    /// Only requests with this method (`GET`, `PATCH`…), if set.
    pub method: Option<String>,
    /// Only requests whose path contains this, if set.
    pub path_contains: Option<String>,
}

impl Rule {
    /// `fault` for the next `times` requests.
    pub fn new(fault: Fault, times: usize) -> Rule {
        Rule {
            fault,
            times,
            method: None,
            path_contains: None,
        }
    }

    /// Only for requests with `method`.
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_owned());
        self
    }

    /// Only for requests whose path contains `part`.
    pub fn path(mut self, part: &str) -> Rule {
        self.path_contains = Some(part.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// A request the proxy saw: its method, path, headers, and the fault it got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub head: String,
    pub fault: Option<Fault>,
    /// When the request arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultyProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    /// A proxy in front of `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: &str) -> FaultyProxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        thread::spawn(move || {
                            let _ = handle(client, upstream, &s);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultyProxy { addr, shared, stop }
    }

    /// `127.0.0.1:<port>` of the proxy, for image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a rule (rules are tried in the order added; the first that matches applies).
    pub fn add(&self, rule: Rule) {
        self.shared.lock().unwrap().rules.push(rule);
    }

    /// Drops every rule.
    pub fn clear(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// How many requests got a fault.
    pub fn faults_applied(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(mut client: TcpStream, upstream: SocketAddr, shared: &Mutex<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, rest) = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").to_owned();
    let fault = {
        let mut s = shared.lock().unwrap();
        let fault = s
            .rules
            .iter_mut()
            .find(|r| r.matches(&method, &path))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            });
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            head: text.clone(),
            fault: fault.clone(),
            at: std::time::Instant::now(),
        });
        fault
    };
    if let Some(Fault::Unavailable) = fault {
        client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream)?;
    // Same request, but the connection closes after it.
    let mut rewritten = Vec::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if i > 0 && (lower.starts_with("connection:") || lower.starts_with("keep-alive:")) {
            continue;
        }
        rewritten.extend_from_slice(line.as_bytes());
        rewritten.extend_from_slice(b"\r\n");
    }
    rewritten.extend_from_slice(b"Connection: close\r\n\r\n");
    let request_cut = match fault {
        Some(Fault::CutRequest { bytes }) => Some(bytes),
        _ => None,
    };
    // Client → registry, on its own thread.
    let mut to_server = server.try_clone()?;
    let mut from_client = client.try_clone()?;
    let cut_client = client.try_clone()?;
    let pump = thread::spawn(move || -> io::Result<()> {
        let mut sent = 0usize;
        let mut send = |data: &[u8], sent: &mut usize| -> io::Result<bool> {
            let allowed = match request_cut {
                Some(limit) => limit.saturating_sub(*sent).min(data.len()),
                None => data.len(),
            };
            to_server.write_all(&data[..allowed])?;
            *sent += allowed;
            if allowed < data.len() {
                let _ = to_server.shutdown(Shutdown::Both);
                let _ = cut_client.shutdown(Shutdown::Both);
                return Ok(false);
            }
            Ok(true)
        };
        if !send(&rewritten, &mut sent)? || !send(&rest, &mut sent)? {
            return Ok(());
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !send(&buf[..n], &mut sent)? {
                return Ok(());
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
        Ok(())
    });
    // Registry → client, with the response faults.
    let response_cut = match fault {
        Some(Fault::CutResponse { bytes }) => Some(bytes),
        _ => None,
    };
    let flip_at = match fault {
        Some(Fault::FlipBody { offset }) => Some(offset),
        _ => None,
    };
    let mut forwarded = 0usize;
    let mut response_head = Vec::new();
    let mut body_start: Option<usize> = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        if body_start.is_none() {
            response_head.extend_from_slice(chunk);
            if let Some(end) = find_head_end(&response_head) {
                body_start = Some(end);
            }
        }
        if let (Some(offset), Some(start)) = (flip_at, body_start) {
            let at = start + offset;
            if at >= forwarded && at < forwarded + n {
                chunk[at - forwarded] ^= 0xff;
            }
        }
        let allowed = match response_cut {
            Some(limit) => limit.saturating_sub(forwarded).min(n),
            None => n,
        };
        client.write_all(&chunk[..allowed])?;
        forwarded += allowed;
        if allowed < n {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = pump.join();
    Ok(())
}

/// Reads up to the end of the request head; the head and whatever came after it.
fn read_head(s: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(&data) {
            let rest = data.split_off(end);
            return Ok((data, rest));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no request head",
            ));
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
    }
}

/// The position just after `\r\n\r\n`, if present.
fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}
