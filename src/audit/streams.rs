//! Audit streams: every entry of the store's audit trail delivered, as JSON lines (one
//! [`AuditEntry`] a line, its serde JSON), to each enabled stream: a webhook (HTTP or
//! HTTPS POSTs of up to [`BATCH`] lines, `Content-Type: application/x-ndjson`, signed with
//! `X-Patgate-Signature: sha256=HEX` when the stream has a secret) or a file (lines
//! appended, reopened after SIGHUP so that logrotate can move it away).
//!
//! Streams are stored ([`crate::store::streams`]), so every instance knows them. Each
//! instance runs one task that watches the trail's newest seq and the list of streams,
//! and one task per enabled stream, so that a slow or dead sink delays nothing but
//! itself; the request path never waits on any of this. A stream is delivered by one
//! instance at a time, the holder of its lease in the store (renewed while it delivers,
//! given up at shutdown, taken over by another instance when it lapses; lease times are
//! wall-clock, so instances' clocks should agree within a few seconds). After a batch
//! is delivered its cursor moves in the store by compare-and-set, from the seq it was
//! read at to the batch's last seq.
//!
//! Delivery is **at least once**: a batch delivered just before a crash, a lapsed lease
//! or a failed cursor write is delivered again, so receivers should drop entries whose
//! `seq` they have already seen. A failed delivery is retried with exponential back-off
//! (1 s doubling to 60 s). A stream that falls more than `audit.stream_backlog` entries
//! behind skips ahead to the newest entries less the backlog: what it skips is counted in
//! `patgate_audit_stream_dropped_total{stream}` and logged once, until it catches up.
//!
//! This module must not be reached from the request path, and never logs a secret.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::webhook_allow::{NotAllowed, WebhookAllow};
use super::AuditEntry;
use crate::proxy::upstream::Stream;
use crate::store::streams::{StreamError, StreamKind, StreamRecord, StreamSecret};
use crate::store::Store;
use crate::telemetry::metrics::metrics;

/// The most entries one delivery carries.
pub const BATCH: usize = 100;
/// How often the trail's newest seq is read.
const TAIL_POLL: Duration = Duration::from_millis(500);
/// How often the list of streams is read (and at once when the admin API changes one).
const LIST_POLL: Duration = Duration::from_secs(2);
/// How often an idle stream reads its record again (changes, lease).
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How long a lease lasts; it is renewed when a third of it is left.
const LEASE: Duration = Duration::from_secs(20);
/// The first wait after a failed delivery, doubled after each failure...
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest one webhook delivery may take: connect, TLS, request and answer head.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a hole in the trail's seqs is waited for before it is passed over. The store
/// draws seqs under its writer lock, so that they become visible in order, and a hole
/// normally means a write that rolled back or entries that retention removed; waiting a
/// little keeps an entry still on its way from being skipped should that ever not hold.
const GAP_GRACE: Duration = Duration::from_secs(10);
/// The longest webhook URL or file path.
pub const MAX_TARGET: usize = 2048;

/// A handle on this instance's stream delivery; cheap to clone.
#[derive(Clone)]
pub struct Streams(Arc<Shared>);

struct Shared {
    store: Store,
    backlog: usize,
    stream_dir: Option<PathBuf>,
    webhook_allow: WebhookAllow,
    /// This instance's name in stream leases.
    instance: String,
    /// Bumped by SIGHUP: file streams reopen their file before they next write.
    reopen: AtomicU64,
    /// Wakes the supervisor: a stream was created, changed or deleted here.
    changed: Notify,
}

impl Streams {
    /// Starts delivering: the supervisor task, which runs until `stop` turns true, then
    /// stops every stream's task and gives up this instance's leases.
    pub fn start(store: Store, config: &super::Config, stop: watch::Receiver<bool>) -> (Streams, JoinHandle<()>) {
        let streams = Streams(Arc::new(Shared {
            store,
            backlog: config.stream_backlog.max(1),
            stream_dir: config.stream_dir.clone(),
            webhook_allow: config.webhook_allow.clone(),
            instance: crate::auth::token::random_base62(16),
            reopen: AtomicU64::new(0),
            changed: Notify::new(),
        }));
        let task = tokio::spawn(supervise(streams.clone(), stop));
        (streams, task)
    }

    /// Makes file streams reopen their files (after logrotate moved them): on SIGHUP.
    pub fn reopen(&self) {
        self.0.reopen.fetch_add(1, Ordering::Relaxed);
    }

    /// Says that a stream was created, changed or deleted, so that delivery follows at once.
    pub fn changed(&self) {
        self.0.changed.notify_one();
    }

    /// The folder file streams may write in (`audit.stream_dir`).
    pub fn stream_dir(&self) -> Option<&Path> {
        self.0.stream_dir.as_deref()
    }

    /// The addresses webhooks may be delivered to (`audit.webhook_allow`).
    pub fn webhook_allow(&self) -> &WebhookAllow {
        &self.0.webhook_allow
    }
}

/// Reads the trail's newest seq and the list of streams, and keeps one task running per
/// enabled stream.
async fn supervise(streams: Streams, mut stop: watch::Receiver<bool>) {
    let shared = &streams.0;
    let (tail_tx, tail_rx) = watch::channel(0i64);
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut next_list = Instant::now();
    let mut tail_failing = false;
    loop {
        if *stop.borrow() {
            break;
        }
        if Instant::now() >= next_list {
            next_list = Instant::now() + LIST_POLL;
            tasks.retain(|_, t| !t.is_finished());
            match shared.store.streams().await {
                Ok(list) => {
                    for s in list.into_iter().filter(|s| s.enabled) {
                        tasks.entry(s.id.clone()).or_insert_with(|| {
                            let worker = Worker::new(streams.clone(), s.id, tail_rx.clone(), stop.clone());
                            tokio::spawn(worker.run())
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "Cannot read the audit streams"),
            }
        }
        // The trail's end, read once for every stream's task (none: nothing to read it for).
        if !tasks.is_empty() {
            match shared.store.audit_tail().await {
                Ok(tail) => {
                    tail_failing = false;
                    tail_tx.send_if_modified(|t| std::mem::replace(t, tail) != tail);
                }
                Err(e) if !tail_failing => {
                    tail_failing = true;
                    tracing::warn!(error = %e, "Cannot read the audit trail for the audit streams; retrying");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TAIL_POLL) => {}
            _ = shared.changed.notified() => next_list = Instant::now(),
            stopping = stop.changed() => if stopping.is_err() { break },
        }
    }
    for t in tasks.values() {
        t.abort();
    }
    for (_, t) in tasks {
        let _ = t.await;
    }
    if let Err(e) = shared.store.release_streams(&shared.instance).await {
        tracing::debug!(error = %e, "Cannot give up the audit streams' leases");
    }
}

/// One stream's delivery.
struct Worker {
    streams: Streams,
    id: String,
    tail: watch::Receiver<i64>,
    stop: watch::Receiver<bool>,
    /// The stream's name, for metrics and logs.
    name: String,
    sink: Option<Sink>,
    /// When the lease is to be renewed; none while not held.
    renew_at: Option<Instant>,
    failing: Option<Failing>,
    /// True from a skip ahead until the stream catches up (the skip is logged once).
    dropping: bool,
    /// A hole in the seqs right after the cursor, and since when it is seen.
    gap: Option<(i64, Instant)>,
}

/// A stream whose deliveries fail.
struct Failing {
    attempts: u32,
    backoff: Duration,
    next_attempt: Instant,
}

/// What a round of the worker's loop says to do next.
enum NextStep {
    /// Go on at once.
    Now,
    /// Wait this long (or for new entries, or for the stop).
    Wait(Duration),
    /// Wait until the trail's newest seq passes this one.
    NewerThan(i64),
    /// The stream is gone or disabled: end the task.
    End,
}

impl Worker {
    fn new(streams: Streams, id: String, tail: watch::Receiver<i64>, stop: watch::Receiver<bool>) -> Worker {
        Worker {
            streams,
            id,
            tail,
            stop,
            name: String::new(),
            sink: None,
            renew_at: None,
            failing: None,
            dropping: false,
            gap: None,
        }
    }

    async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let wait = match self.round().await {
                NextStep::Now => continue,
                NextStep::End => break,
                NextStep::Wait(d) => d,
                NextStep::NewerThan(seq) => {
                    let mut tail = self.tail.clone();
                    tokio::select! {
                        newer = tail.wait_for(|t| *t > seq) => if newer.is_err() { break },
                        _ = tokio::time::sleep(IDLE_CHECK) => {}
                        stopping = self.stop.changed() => if stopping.is_err() { break },
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                stopping = self.stop.changed() => if stopping.is_err() { break },
            }
        }
        if !self.name.is_empty() {
            metrics().forget_stream(&self.name);
        }
    }

    /// One step: read the stream, hold its lease, skip ahead if too far behind, deliver
    /// the next batch.
    async fn round(&mut self) -> NextStep {
        let shared = self.streams.0.clone();
        let store = &shared.store;
        let record = match store.stream(&self.id).await {
            Ok(r) => r,
            Err(StreamError::NotFound(_)) => return NextStep::End,
            Err(e) => {
                tracing::debug!(stream = %self.name, error = %e, "Cannot read the audit stream");
                return NextStep::Wait(BACKOFF_MIN);
            }
        };
        if !record.enabled {
            return NextStep::End;
        }
        if record.name != self.name {
            if !self.name.is_empty() {
                metrics().forget_stream(&self.name);
            }
            self.name = record.name.clone();
        }
        // The lease: one instance delivers a stream at a time.
        let now = Instant::now();
        if self.renew_at.is_none_or(|at| now >= at) {
            let now_ms = super::now_millis();
            let until = now_ms + LEASE.as_millis() as i64;
            match store.claim_stream(&self.id, &shared.instance, now_ms, until).await {
                Ok(true) => self.renew_at = Some(now + LEASE * 2 / 3),
                Ok(false) => {
                    // Another instance delivers it; look again when its lease may have lapsed.
                    self.renew_at = None;
                    return NextStep::Wait(LEASE / 4);
                }
                Err(e) => {
                    tracing::debug!(stream = %self.name, error = %e, "Cannot take the audit stream's lease");
                    self.renew_at = None;
                    return NextStep::Wait(BACKOFF_MIN);
                }
            }
        }
        // Too far behind: skip ahead, count, and say so once.
        let tail = *self.tail.borrow();
        let backlog = i64::try_from(shared.backlog).unwrap_or(i64::MAX);
        if tail.saturating_sub(record.delivered_seq) > backlog {
            let to = tail - backlog;
            let skipped = match store.audit_count(record.delivered_seq, to).await {
                Ok(n) => n,
                Err(_) => return NextStep::Wait(BACKOFF_MIN),
            };
            if let Ok(true) = store.advance_stream(&self.id, record.delivered_seq, to).await {
                metrics().stream_dropped(&self.name, skipped);
                if !self.dropping {
                    self.dropping = true;
                    tracing::warn!(
                        stream = %self.name,
                        dropped = skipped,
                        audit.stream_backlog = shared.backlog,
                        "Audit stream fell behind by more than audit.stream_backlog entries; the oldest are skipped until it catches up"
                    );
                }
            }
            self.gap = None;
            return NextStep::Now;
        }
        // A failing sink waits out its back-off (the backlog is checked meanwhile).
        if let Some(f) = &self.failing {
            if now < f.next_attempt {
                return NextStep::Wait((f.next_attempt - now).min(BACKOFF_MIN));
            }
        }
        let entries = match store.audit_since(record.delivered_seq, BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(stream = %self.name, error = %e, "Cannot read the audit trail");
                return NextStep::Wait(BACKOFF_MIN);
            }
        };
        let entries = self.without_gap(record.delivered_seq, entries, now);
        let Some(last) = entries.last().map(|e| e.seq) else {
            if self.dropping {
                self.dropping = false;
                tracing::info!(stream = %self.name, "Audit stream caught up");
            }
            return match self.gap {
                Some(_) => NextStep::Wait(BACKOFF_MIN),
                None => NextStep::NewerThan(record.delivered_seq),
            };
        };
        let full = entries.len() >= BATCH;
        let sink = self.sink_for(&record);
        let delivered = sink.deliver(&entries, &shared).await;
        match delivered {
            Ok(()) => {
                if let Some(f) = self.failing.take() {
                    tracing::info!(stream = %self.name, attempts = f.attempts, "Audit stream delivers again");
                }
                metrics().stream_delivered(&self.name, entries.len() as u64);
                match store.advance_stream(&self.id, record.delivered_seq, last).await {
                    Ok(true) => {}
                    // Another instance moved it (its lease lapsed under us): read it again.
                    Ok(false) => self.renew_at = None,
                    Err(e) => {
                        tracing::warn!(stream = %self.name, error = %e, "Cannot record the audit stream's progress; its last entries will be delivered again");
                        return NextStep::Wait(BACKOFF_MIN);
                    }
                }
                if full {
                    NextStep::Now
                } else {
                    NextStep::NewerThan(last)
                }
            }
            Err(e) => {
                let f = self.failing.get_or_insert(Failing {
                    attempts: 0,
                    backoff: BACKOFF_MIN / 2,
                    next_attempt: now,
                });
                f.attempts += 1;
                f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
                f.next_attempt = Instant::now() + f.backoff;
                if f.attempts == 1 {
                    tracing::warn!(stream = %self.name, kind = record.kind.as_str(), error = %e, "Audit stream delivery failed; retrying with back-off");
                } else {
                    tracing::debug!(stream = %self.name, attempts = f.attempts, error = %e, "Audit stream delivery failed again");
                }
                NextStep::Wait(f.backoff.min(BACKOFF_MIN))
            }
        }
    }

    /// `entries` (read after `cursor`) up to the first hole in their seqs. A hole is waited
    /// for up to [`GAP_GRACE`], then passed over.
    fn without_gap(&mut self, cursor: i64, mut entries: Vec<AuditEntry>, now: Instant) -> Vec<AuditEntry> {
        let mut expected = cursor + 1;
        for (i, e) in entries.iter().enumerate() {
            if e.seq != expected {
                match self.gap {
                    Some((seq, since)) if seq == expected && now.duration_since(since) >= GAP_GRACE => {
                        // Waited long enough: what is missing is not coming.
                        self.gap = None;
                        expected = e.seq + 1;
                        continue;
                    }
                    Some((seq, _)) if seq == expected => {}
                    _ => self.gap = Some((expected, now)),
                }
                entries.truncate(i);
                return entries;
            }
            expected += 1;
        }
        self.gap = None;
        entries
    }

    /// The sink for the stream as stored now (made again when it changed).
    fn sink_for(&mut self, r: &StreamRecord) -> &mut Sink {
        let same = self.sink.as_ref().is_some_and(|s| s.is_for(r));
        if !same {
            self.sink = Some(Sink::new(r));
        }
        self.sink.get_or_insert_with(|| Sink::new(r))
    }
}

/// Why a delivery failed. Never holds a secret (nor a URL's query: webhook URLs are
/// shown without it).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the webhook URL is not usable: {0}")]
    Url(String),
    #[error("cannot resolve the host: {0}")]
    Resolve(std::io::Error),
    #[error("{0}")]
    NotAllowed(#[from] NotAllowed),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("no answer within {}s", WEBHOOK_TIMEOUT.as_secs())]
    Timeout,
    #[error("file streams are off: audit.stream_dir is not set")]
    FilesOff,
    #[error("{0} is not inside audit.stream_dir")]
    OutsideDir(String),
    #[error("{path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("the file task stopped")]
    TaskStopped,
}

/// Where a stream's lines go.
enum Sink {
    Webhook {
        url: String,
        secret: Option<StreamSecret>,
    },
    File {
        path: PathBuf,
        /// The file open for appending, and the reopen generation it was opened in.
        open: Option<(std::fs::File, u64)>,
    },
}

impl Sink {
    fn new(r: &StreamRecord) -> Sink {
        match r.kind {
            StreamKind::Webhook => Sink::Webhook {
                url: r.target.clone(),
                secret: r.secret.clone(),
            },
            StreamKind::File => Sink::File {
                path: PathBuf::from(&r.target),
                open: None,
            },
        }
    }

    fn is_for(&self, r: &StreamRecord) -> bool {
        match self {
            Sink::Webhook { url, secret } => r.kind == StreamKind::Webhook && *url == r.target && *secret == r.secret,
            Sink::File { path, .. } => r.kind == StreamKind::File && path.as_os_str() == r.target.as_str(),
        }
    }

    async fn deliver(&mut self, entries: &[AuditEntry], shared: &Shared) -> Result<(), DeliveryError> {
        let body = json_lines(entries);
        match self {
            Sink::Webhook { url, secret } => {
                let target = WebhookTarget::parse(url).map_err(DeliveryError::Url)?;
                let signature = secret.as_ref().map(|s| sign(s.expose(), &body));
                tokio::time::timeout(WEBHOOK_TIMEOUT, post(&target, &shared.webhook_allow, body, signature))
                    .await
                    .map_err(|_| DeliveryError::Timeout)?
            }
            Sink::File { path, open } => {
                let generation = shared.reopen.load(Ordering::Relaxed);
                let dir = shared.stream_dir.as_deref().ok_or(DeliveryError::FilesOff)?;
                if !is_inside(path, dir) {
                    return Err(DeliveryError::OutsideDir(path.display().to_string()));
                }
                // After SIGHUP the file is opened again by its path: logrotate moved the old one.
                let file = open.take().filter(|(_, g)| *g == generation).map(|(f, _)| f);
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let fail = |error| DeliveryError::File {
                        path: path.display().to_string(),
                        error,
                    };
                    let mut file = match file {
                        Some(f) => f,
                        None => open_append(&path).map_err(fail)?,
                    };
                    file.write_all(&body).map_err(fail)?;
                    file.sync_data().map_err(fail)?;
                    Ok::<_, DeliveryError>(file)
                })
                .await
                .map_err(|_| DeliveryError::TaskStopped)??;
                *open = Some((written, generation));
                Ok(())
            }
        }
    }
}

/// The entries as JSON lines, one a line, each ending with `\n`.
pub fn json_lines(entries: &[AuditEntry]) -> Bytes {
    let mut out = Vec::with_capacity(entries.len() * 256);
    for e in entries {
        // An entry is plain data: serializing it cannot fail.
        if serde_json::to_writer(&mut out, e).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` keyed with `secret`, as sent in `X-Patgate-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Opens a file stream's file for appending, creating it (mode 0640) if needed; refuses
/// anything but a regular file (a symbolic link, a device, a folder).
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(std::io::Error::other("not a regular file"));
        }
        _ => {}
    }
    std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

/// Whether `path` names a file inside `dir`, read as written: absolute, with no `.`,
/// `..` or empty part, below `dir`.
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    let plain = path
        .to_str()
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|p| p.split('/').all(|part| !matches!(part, "" | "." | "..")));
    plain && path.starts_with(dir) && path != dir
}

/// A webhook's URL, checked: `http://` or `https://`, a host, no user or password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub tls: bool,
    pub authority: Authority,
    pub path: PathAndQuery,
}

impl WebhookTarget {
    /// Parses and checks a webhook URL; the error says what is wrong, in a few words.
    pub fn parse(url: &str) -> Result<WebhookTarget, String> {
        if url.len() > MAX_TARGET {
            return Err(format!("must be at most {MAX_TARGET} characters"));
        }
        plain_url(url)?;
        let uri: Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err("must be an http:// or https:// URL".into()),
        };
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("may not hold a user or password".into());
        }
        let host = bare_host(&authority);
        if host.is_empty() {
            return Err("has no host".into());
        }
        // Brackets hold an IPv6 address, and nothing else (`[::1:]` is none).
        if authority.host().starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has a host that is not a name or an address".into());
        }
        // `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`: what a resolver (and a
        // browser's URL parser) reads as an IPv4 address, which would hide one from the
        // check made when a stream is created. A name's last label is never a number.
        if host.parse::<std::net::IpAddr>().is_err() {
            let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or_default();
            let numeric = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
            let hex = last.len() >= 2 && last[..2].eq_ignore_ascii_case("0x");
            if numeric || hex {
                return Err("has a numeric host that is not an IPv4 address in dotted decimal (a.b.c.d)".into());
            }
        }
        if authority.port().is_some() && authority.port_u16().is_none_or(|p| p == 0) {
            return Err("has a port that is not 1 to 65535".into());
        }
        if tls && ServerName::try_from(host).is_err() {
            return Err("has a host that is neither a DNS name nor an IP address".into());
        }
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(WebhookTarget { tls, authority, path })
    }

    /// The address the URL names, when its host is one rather than a name.
    pub fn address(&self) -> Option<std::net::IpAddr> {
        bare_host(&self.authority).parse().ok()
    }
}

/// Checks the URL's shape as the OpenAPI document's `WebhookUrl` pattern says it:
/// `http` or `https` (any case), `://`, a host of letters, digits, `.` and `-` (or an IPv6
/// address in brackets), an optional port of 1 to 5 digits not starting with 0, and an
/// optional path (and query) of URL characters.
fn plain_url(url: &str) -> Result<(), String> {
    let scheme_end = url.find("://").ok_or("must be an http:// or https:// URL")?;
    let scheme = &url[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let rest = &url[scheme_end + 3..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err("may not hold a user or password".into());
    }
    let bad_host = || "has a host that is not a name or an address".to_owned();
    let port = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(bad_host)?;
            if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(bad_host());
            }
            match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or_else(bad_host)?),
            }
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
                return Err(bad_host());
            }
            port
        }
    };
    if let Some(p) = port {
        let digits = (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0');
        if !digits || p.parse::<u16>().is_err() {
            return Err("has a port that is not 1 to 65535".into());
        }
    }
    let url_char = |b: u8| b.is_ascii_alphanumeric() || b"._~/%!$&'()*+,;=:@?-".contains(&b);
    if !path.bytes().all(url_char) {
        return Err("has a path with characters a URL does not hold (write them %-encoded)".into());
    }
    Ok(())
}

/// The host of an authority without the brackets of an IPv6 address.
fn bare_host(authority: &Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// The TLS client for webhooks: the system's root certificates, HTTP/1.1.
fn tls() -> &'static TlsConnector {
    static TLS: OnceLock<TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(crate::proxy::upstream::system_roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    })
}

/// Connects to the first address of `host` that `allow` lets a webhook reach and that
/// answers; none allowed is [`DeliveryError::NotAllowed`], naming the first refused.
async fn connect(host: &str, port: u16, allow: &WebhookAllow) -> Result<TcpStream, DeliveryError> {
    let mut refused = None;
    let mut failed = None;
    for addr in tokio::net::lookup_host((host, port)).await.map_err(DeliveryError::Resolve)? {
        if let Err(e) = allow.check(addr.ip()) {
            refused.get_or_insert(e);
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => failed = Some(e),
        }
    }
    Err(match (failed, refused) {
        (Some(e), _) => DeliveryError::Connect(e),
        (None, Some(refused)) => refused.into(),
        (None, None) => DeliveryError::Resolve(std::io::Error::other("no address")),
    })
}

/// POSTs `body` to the webhook on a connection of its own, to an address `allow` lets it
/// reach; a 2xx answer is success.
async fn post(target: &WebhookTarget, allow: &WebhookAllow, body: Bytes, signature: Option<String>) -> Result<(), DeliveryError> {
    let host = bare_host(&target.authority);
    let port = target.authority.port_u16().unwrap_or(if target.tls { 443 } else { 80 });
    let tcp = connect(host, port, allow).await?;
    let _ = tcp.set_nodelay(true);
    let io = if target.tls {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| DeliveryError::Url(e.to_string()))?;
        Stream::Tls(Box::new(tls().connect(name, tcp).await.map_err(DeliveryError::Tls)?))
    } else {
        Stream::Plain(tcp)
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let mut req = Request::post(Uri::from(target.path.clone()))
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::USER_AGENT, concat!("patgate/", env!("CARGO_PKG_VERSION")))
        .header(header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| DeliveryError::Url(e.to_string()))?;
    if let Some(sig) = signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
        req.headers_mut().insert("x-patgate-signature", sig);
    }
    let answer = send.send_request(req).await;
    driver.abort();
    let status = answer?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host_and_no_userinfo() {
        let t = WebhookTarget::parse("https://siem.example.com:8443/in?k=v").unwrap();
        assert!(t.tls);
        assert_eq!(t.authority.as_str(), "siem.example.com:8443");
        assert_eq!(t.path.as_str(), "/in?k=v");
        let t = WebhookTarget::parse("http://[::1]:9000").unwrap();
        assert_eq!((t.tls, t.path.as_str()), (false, "/"));
        for (bad, why) in [
            ("ftp://x/", "must be an http:// or https:// URL"),
            ("/relative", "must be an http:// or https:// URL"),
            ("http://u:p@x/", "may not hold a user or password"),
            ("http://u@x/", "may not hold a user or password"),
            ("not a url", "must be an http:// or https:// URL"),
            ("http://a b/", "has a host that is not a name or an address"),
            (
                "http://h/a b",
                "has a path with characters a URL does not hold (write them %-encoded)",
            ),
            ("http://h:70000/", "has a port that is not 1 to 65535"),
            ("http://h:/", "has a port that is not 1 to 65535"),
            ("http://[zz]/", "has a host that is not a name or an address"),
            ("http://[::1:]:9000", "has a host that is not a name or an address"),
            ("http://[1.2.3.4]/", "has a host that is not a name or an address"),
            (
                "http://h/#frag",
                "has a path with characters a URL does not hold (write them %-encoded)",
            ),
            ("http://x:0/", "has a port that is not 1 to 65535"),
        ] {
            assert_eq!(WebhookTarget::parse(bad).unwrap_err(), why, "{bad}");
        }
        // Numbers a resolver reads as IPv4 addresses, written otherwise than a.b.c.d.
        for bad in [
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0/",
            "https://10.1/",
        ] {
            assert_eq!(
                WebhookTarget::parse(bad).unwrap_err(),
                "has a numeric host that is not an IPv4 address in dotted decimal (a.b.c.d)",
                "{bad}"
            );
        }
        for good in [
            "http://10.0.0.1/",
            "http://siem.example/",
            "http://a1.example.com./",
            "http://0x.example/",
            "http://[::1]/",
        ] {
            assert!(WebhookTarget::parse(good).is_ok(), "{good}");
        }
        assert!(WebhookTarget::parse(&format!("http://x/{}", "a".repeat(MAX_TARGET))).is_err());
    }

    #[test]
    fn files_stay_inside_the_stream_folder() {
        let dir = Path::new("/var/log/patgate");
        assert!(is_inside(Path::new("/var/log/patgate/audit.jsonl"), dir));
        assert!(is_inside(Path::new("/var/log/patgate/sub/audit.jsonl"), dir));
        for bad in [
            "/var/log/patgate",
            "/var/log/patgate/../passwd",
            "/var/log/patgate/./a",
            "/var/log/patgate//a",
            "/var/log/patgate/a/",
            "/var/log/patgatex/a",
            "relative/a",
            "/etc/passwd",
        ] {
            assert!(!is_inside(Path::new(bad), dir), "{bad}");
        }
    }

    #[test]
    fn lines_are_one_entry_each_and_the_signature_is_hmac_sha256() {
        let mut a = AuditEntry::new(1_765_038_000_123, Action::Create, Outcome::Success);
        a.seq = 7;
        a.reason = Some("line\nbreak".into());
        let b = AuditEntry::new(1_765_038_000_124, Action::Revoke, Outcome::Success);
        let body = json_lines(&[a.clone(), b]);
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        let first: AuditEntry = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first, a);
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_hole_in_the_seqs_is_waited_for_then_passed_over() {
        let (tx, _) = watch::channel(false);
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = rt
            .block_on(Store::open(&crate::store::Location::Sqlite(dir.path().join("t.db"))))
            .unwrap();
        let (streams, task) = rt.block_on(async { Streams::start(store, &super::super::Config::default(), tx.subscribe()) });
        task.abort();
        let (_, tail) = watch::channel(0);
        let mut w = Worker::new(streams, "x".into(), tail, tx.subscribe());
        let e = |seq| {
            let mut e = AuditEntry::new(0, Action::Access, Outcome::Success);
            e.seq = seq;
            e
        };
        let seqs = |v: Vec<AuditEntry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let t0 = Instant::now();
        assert_eq!(seqs(w.without_gap(3, vec![e(4), e(5), e(7)], t0)), vec![4, 5]);
        assert_eq!(w.gap, Some((6, t0)));
        assert_eq!(
            seqs(w.without_gap(5, vec![e(7), e(8)], t0 + Duration::from_secs(1))),
            Vec::<i64>::new()
        );
        assert_eq!(w.gap, Some((6, t0)), "the same hole keeps its first sight");
        // Filled in time.
        assert_eq!(seqs(w.without_gap(5, vec![e(6), e(7)], t0 + Duration::from_secs(2))), vec![6, 7]);
        assert_eq!(w.gap, None);
        // Never filled: passed over after the grace.
        let t1 = t0 + Duration::from_secs(3);
        assert!(w.without_gap(7, vec![e(9)], t1).is_empty());
        assert_eq!(seqs(w.without_gap(7, vec![e(9), e(10)], t1 + GAP_GRACE)), vec![9, 10]);
    }
}
