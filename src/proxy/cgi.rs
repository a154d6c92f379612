//! The built-in git upstream: `git http-backend` run as CGI over a folder of bare
//! repositories (`/{org}/{repo}.git` is `DIR/{org}/{repo}.git`), with `REMOTE_USER` set
//! to the token's owner. The request body is pumped into the process while its answer
//! streams out, so a clone or push of any size passes in bounded memory. At most
//! [`Config::max_processes`] run at once; a client that goes away ends its process, and so
//! does git staying silent for [`Config::response_timeout`] (a stalled upload).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body::{Body, BoxError};
use super::error::ProxyError;
use super::plan::Plan;

/// The most bytes of CGI response headers read.
pub const MAX_CGI_HEADER: usize = 64 * 1024;
/// The most bytes of a process's standard error that are logged.
const MAX_STDERR: u64 = 64 * 1024;
/// The size of each read from the process.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of the built-in git upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The git executable.
    pub binary: PathBuf,
    /// The most processes at once.
    pub max_processes: usize,
    /// The longest wait for a free process slot plus git's response headers, and the
    /// longest git may go without writing while it answers.
    pub response_timeout: Duration,
}

/// Runs `git http-backend`, at most `max_processes` at a time.
pub struct Runner {
    config: Config,
    slots: Arc<Semaphore>,
}

impl Runner {
    /// A runner with `config`'s limits.
    pub fn new(config: Config) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_processes));
        Runner { config, slots }
    }

    /// Serves one permitted request from the repositories under `root`. Waiting for a
    /// process slot and for git's response headers together take at most
    /// [`Config::response_timeout`]; past it the process is ended and the answer is 504.
    pub async fn run<B>(&self, root: &Path, plan: Plan<'_>, body: B) -> Result<Response<Body>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let limit = self.config.response_timeout;
        let started = async {
            let slot = self.slots.clone().acquire_owned().await.map_err(|_| ProxyError::CgiUnavailable)?;
            let mut child = self.command(root, &plan).spawn().map_err(|e| {
                tracing::error!(binary = %self.config.binary.display(), error = %e, "Cannot start git http-backend");
                ProxyError::CgiUnavailable
            })?;
            let (Some(stdin), Some(mut stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
                return Err(ProxyError::CgiUnavailable);
            };
            let upload = Arc::new(Activity::new());
            tokio::spawn(pump_body(body.map_err(Into::into).boxed_unsync(), stdin, upload.clone()));
            tokio::spawn(log_stderr(stderr));

            let (mut response, rest) = read_head(&mut stdout).await?;
            let state = Streaming {
                first: (!rest.is_empty()).then_some(rest),
                stdout,
                child: Some(child),
                idle: limit,
                upload,
                _slot: slot,
            };
            *response.body_mut() = StreamBody::new(futures_util::stream::unfold(state, next_chunk)).boxed_unsync();
            Ok(response)
        };
        tokio::time::timeout(limit, started).await.map_err(|_| {
            tracing::warn!(timeout = %humantime::format_duration(limit), "git http-backend gave no answer in time");
            ProxyError::UpstreamTimeout(limit)
        })?
    }

    /// The `git http-backend` command with its CGI environment, and nothing else of ours.
    fn command(&self, root: &Path, plan: &Plan<'_>) -> Command {
        let (parts, path, permit, peer) = (plan.parts(), plan.path(), plan.permit(), plan.client());
        let mut cmd = Command::new(&self.config.binary);
        cmd.arg("http-backend")
            .env_clear()
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("SERVER_SOFTWARE", "patgate")
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("PATH_INFO", path.decoded())
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("REMOTE_USER", permit.owner())
            .env("REMOTE_ADDR", peer.ip().to_string())
            .env("AUTH_TYPE", "Basic");
        for var in ["PATH", "HOME", "LANG"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        for (name, value) in &parts.headers {
            let v = OsStr::from_bytes(value.as_bytes());
            if name == header::CONTENT_TYPE {
                cmd.env("CONTENT_TYPE", v);
            } else if name == header::CONTENT_LENGTH {
                cmd.env("CONTENT_LENGTH", v);
            } else {
                cmd.env(format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_")), v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Copies the request body into git's standard input, noting each write in `activity`.
async fn pump_body(mut body: Body, mut stdin: ChildStdin, activity: Arc<Activity>) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if stdin.write_all(&data).await.is_err() {
                        return;
                    }
                    activity.touch();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "Client request body ended early");
                return;
            }
        }
    }
    let _ = stdin.shutdown().await;
}

/// Logs git's standard error line by line, at most [`MAX_STDERR`] bytes; drops the rest.
async fn log_stderr(mut stderr: ChildStderr) {
    let mut lines = BufReader::new((&mut stderr).take(MAX_STDERR)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(target: "patgate::cgi", message = %line.chars().take(500).collect::<String>(), "git http-backend");
    }
    let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
}

struct Streaming {
    first: Option<Bytes>,
    stdout: ChildStdout,
    child: Option<Child>,
    /// The longest git may stay silent (for instance while it waits for a stalled upload).
    idle: Duration,
    /// When the request body last moved: git is silent while a push streams in.
    upload: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

/// When something last happened, as milliseconds since the value was made.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

async fn next_chunk(mut s: Streaming) -> Option<(Result<Frame<Bytes>, BoxError>, Streaming)> {
    if let Some(first) = s.first.take() {
        return Some((Ok(Frame::data(first)), s));
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let read = loop {
        // Reading a child's stdout is cancel-safe: a timed-out read loses nothing.
        match tokio::time::timeout(s.idle, s.stdout.read_buf(&mut buf)).await {
            Ok(read) => break read,
            Err(_) if s.upload.quiet_for() < s.idle => continue,
            Err(_) => {
                // Dropping the state ends the process and frees its slot.
                tracing::warn!(idle = %humantime::format_duration(s.idle), "git http-backend silent too long; response cut");
                return Some((Err("git http-backend went silent".into()), s));
            }
        }
    };
    match read {
        Ok(0) => {
            if let Some(mut child) = s.child.take() {
                match child.wait().await {
                    Ok(status) if !status.success() => tracing::warn!(%status, "git http-backend exited with failure"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "git http-backend could not be waited for"),
                }
            }
            None
        }
        Ok(_) => Some((Ok(Frame::data(buf.freeze())), s)),
        Err(e) => Some((Err(Box::new(e) as BoxError), s)),
    }
}

/// Reads until the blank line that ends the CGI headers; returns the answer they make
/// and the bytes that followed them.
async fn read_head(stdout: &mut ChildStdout) -> Result<(Response<Body>, Bytes), ProxyError> {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        if let Some((len, head)) = parse_head(&buf)? {
            let rest = buf.split_off(len).freeze();
            let mut response = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            return Ok((response, rest));
        }
        let n = stdout.read_buf(&mut buf).await.map_err(|_| ProxyError::CgiMalformed)?;
        if n == 0 {
            tracing::warn!("git http-backend ended before its headers");
            return Err(ProxyError::CgiMalformed);
        }
    }
}

/// A CGI answer's head (RFC 3875 §6): its status and the headers that go to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHead {
    /// From the `Status` header; 200 without one.
    pub status: StatusCode,
    /// Every other header line, hop-by-hop headers removed.
    pub headers: http::HeaderMap,
}

/// Reads the CGI head at the start of `buf`, lines ended by LF or CRLF up to the first
/// blank line: `Ok(Some((length, head)))` when it is whole (`length` counts the blank
/// line), `Ok(None)` while it is not and `buf` holds at most [`MAX_CGI_HEADER`] bytes.
/// A line without a colon, a bad `Status`, a name or value that is not a valid header, a
/// head that is not UTF-8 or that is longer than the limit: [`ProxyError::CgiMalformed`].
/// Pure, and fuzzed (`fuzz/fuzz_targets/cgi_head.rs`).
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, CgiHead)>, ProxyError> {
    let Some((end, sep)) = find_blank_line(buf) else {
        return match buf.len() > MAX_CGI_HEADER {
            true => Err(ProxyError::CgiMalformed),
            false => Ok(None),
        };
    };
    // However the bytes arrived: a blank line that came in the read past the limit too.
    if end + sep > MAX_CGI_HEADER {
        return Err(ProxyError::CgiMalformed);
    }
    let mut head = CgiHead {
        status: StatusCode::OK,
        headers: http::HeaderMap::new(),
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::CgiMalformed)?;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ProxyError::CgiMalformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            head.status = code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(ProxyError::CgiMalformed)?;
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| ProxyError::CgiMalformed)?;
        let value = HeaderValue::from_str(value).map_err(|_| ProxyError::CgiMalformed)?;
        head.headers.append(name, value);
    }
    super::headers::prepare_response(&mut head.headers);
    Ok(Some((end + sep, head)))
}

/// Where the first blank line is: its start and its length (LF LF or CRLF CRLF).
fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_heads_parse() {
        let input = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT\r\n\r\nbody";
        let (len, h) = parse_head(input).unwrap().unwrap();
        assert_eq!((len, h.status), (input.len() - 4, StatusCode::NOT_FOUND));
        assert_eq!(h.headers["content-type"], "text/plain");
        let (_, h) = parse_head(b"Content-Type: application/x-git-upload-pack-advertisement\nCache-Control: no-cache\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert!(parse_head(b"Status: banana\n\n").is_err());
        assert!(parse_head(b"no colon here\n\n").is_err());
        assert!(parse_head(b"Content-Type: text/plain\r\n").unwrap().is_none());
        assert!(parse_head(&vec![b'a'; MAX_CGI_HEADER + 1]).is_err());
        // The limit holds when the blank line comes in the same read that crosses it.
        let mut long = b"X-Long: ".to_vec();
        long.resize(MAX_CGI_HEADER, b'a');
        long.extend_from_slice(b"\n\nbody");
        assert!(parse_head(&long).is_err());
        long.truncate(MAX_CGI_HEADER - 2);
        long.extend_from_slice(b"\n\n");
        assert_eq!(
            parse_head(&long).unwrap().unwrap().0,
            MAX_CGI_HEADER,
            "a head of exactly the limit passes"
        );
        let (_, h) = parse_head(b"Connection: x-a\nX-A: 1\nTransfer-Encoding: chunked\nX-B: 2\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-b"],
            "hop-by-hop headers are dropped"
        );
    }

    #[test]
    fn blank_lines_are_found_in_either_style() {
        assert_eq!(find_blank_line(b"a: b\r\n\r\nbody"), Some((4, 4)));
        assert_eq!(find_blank_line(b"a: b\n\nbody"), Some((4, 2)));
        assert_eq!(find_blank_line(b"a: b\r\n"), None);
    }
}
