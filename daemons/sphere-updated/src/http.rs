//! A deliberately small HTTP/1.1 GET client over rustls, for static update repositories.
//!
//! Why not reqwest (tough's own transport)? An installer needs two things it hides: a `Range`
//! request to resume an interrupted download where it stopped, and a hard per-read stall
//! timeout so a dead link (network loss, a tarpitting server) turns into a retry instead of a
//! hang. A static file server or CDN needs nothing else: `Connection: close`, one request per
//! connection, `Content-Length` bodies.
//!
//! Trust: HTTPS uses the CA certificates given in the configuration (a device ships its fleet's
//! CA; there is no system trust store in the image). TLS is not what makes updates safe -- TUF
//! signatures are -- but it keeps what a device downloads private and stops trivial
//! tampering before the bytes reach the verifier. Plain `http://` is accepted for the same
//! reason (TUF makes it safe), but only when the configuration allows it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use url::Url;

/// Longest response head we read (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: unsupported URL (only http and https)")]
    Unsupported { url: String },
    #[error("{url}: plain http is not allowed by the configuration (allow_plain_http)")]
    PlainHttp { url: String },
    #[error("{url}: {what}: {source}")]
    Io {
        url: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: timed out ({what})")]
    Timeout { url: String, what: &'static str },
    #[error("{url}: bad response: {detail}")]
    Protocol { url: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl HttpError {
    /// Worth retrying (network trouble, server errors) rather than a final answer.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Io { .. } | HttpError::Timeout { .. } => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// Connection settings shared by every request.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    allow_plain_http: bool,
    /// Connect and per-read timeout: the longest the link may stay silent.
    pub stall_timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("allow_plain_http", &self.allow_plain_http).finish()
    }
}

/// A response whose head has been read; the body is [`Response::body`].
pub struct Response {
    pub status: u16,
    /// Body length, when the server said (Content-Length).
    pub content_length: Option<u64>,
    /// First byte offset of a 206 Partial Content body.
    pub range_start: Option<u64>,
    pub body: Box<dyn AsyncRead + Unpin + Send + Sync>,
}

impl HttpClient {
    /// `ca_pem`: PEM certificates to trust for HTTPS (the fleet's CA).
    pub fn new(ca_pem: &[u8], allow_plain_http: bool) -> Result<Self, HttpError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| HttpError::Tls(format!("CA certificates: {e}")))?;
            roots.add(cert).map_err(|e| HttpError::Tls(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient { tls: Arc::new(tls), allow_plain_http, stall_timeout: Duration::from_secs(30) })
    }

    /// `GET url`, from byte `from` on when `from > 0` (a `Range` request). Non-2xx answers
    /// are errors; the caller checks whether a ranged request got 206 or a whole 200.
    pub async fn get(&self, url: &Url, from: u64) -> Result<Response, HttpError> {
        let text = url.as_str().to_string();
        let tls = match url.scheme() {
            "https" => true,
            "http" if self.allow_plain_http => false,
            "http" => return Err(HttpError::PlainHttp { url: text }),
            _ => return Err(HttpError::Unsupported { url: text }),
        };
        let host = url.host_str().ok_or_else(|| HttpError::Unsupported { url: text.clone() })?.to_string();
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let io = |what| {
            let url = text.clone();
            move |source| HttpError::Io { url, what, source }
        };
        let timeout = self.stall_timeout;
        let connect_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((connect_host.as_str(), port)))
            .await
            .map_err(|_| HttpError::Timeout { url: text.clone(), what: "connect" })?
            .map_err(io("connect"))?;
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Stream> = if tls {
            let name = rustls::pki_types::ServerName::try_from(connect_host.clone())
                .map_err(|e| HttpError::Tls(format!("server name {connect_host:?}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| HttpError::Timeout { url: text.clone(), what: "TLS handshake" })?
                .map_err(io("TLS handshake"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut stream = BufReader::with_capacity(256 * 1024, stream);
        let mut path = url.path().to_string();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: sphere-updated\r\nAccept-Encoding: identity\r\nConnection: close\r\n"
        );
        if from > 0 {
            request.push_str(&format!("Range: bytes={from}-\r\n"));
        }
        request.push_str("\r\n");
        tokio::time::timeout(timeout, stream.get_mut().write_all(request.as_bytes()))
            .await
            .map_err(|_| HttpError::Timeout { url: text.clone(), what: "sending request" })?
            .map_err(io("sending request"))?;

        // Head: status line and headers, bounded.
        let mut head_len = 0usize;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(timeout, stream.read_line(&mut line))
                .await
                .map_err(|_| HttpError::Timeout { url: text.clone(), what: "reading response head" })?
                .map_err(io("reading response head"))?;
            head_len += n;
            if n == 0 || head_len > MAX_HEAD {
                return Err(HttpError::Protocol { url: text, detail: "response head truncated or too long".into() });
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let protocol = |detail: String| HttpError::Protocol { url: text.clone(), detail };
        let status_line = lines.first().ok_or_else(|| protocol("empty response".into()))?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol(format!("status line {status_line:?}")))?;
        let header = |name: &str| {
            lines.iter().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        if !(200..300).contains(&status) {
            return Err(HttpError::Status { url: text, status });
        }
        let content_length = match header("content-length") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| protocol(format!("Content-Length {v:?}")))?),
            None => None,
        };
        let range_start = if status == 206 {
            // "bytes START-END/TOTAL"
            let v = header("content-range").ok_or_else(|| protocol("206 without Content-Range".into()))?;
            let start = v
                .trim_start_matches("bytes")
                .trim()
                .split('-')
                .next()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| protocol(format!("Content-Range {v:?}")))?;
            Some(start)
        } else {
            None
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            // Static files have a length; a chunked body would bypass the length checks below
            // that rely on Content-Length, so it is refused rather than half-supported.
            return Err(protocol("chunked transfer encoding is not supported for update files".into()));
        }
        let body: Box<dyn AsyncRead + Unpin + Send + Sync> = match content_length {
            Some(len) => Box::new(stream.take(len)),
            None => Box::new(stream),
        };
        Ok(Response {
            status,
            content_length,
            range_start,
            body: Box::new(StallGuard { inner: body, timeout, sleep: None }),
        })
    }
}

trait Stream: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Turns a body read that stays silent longer than the stall timeout into an error, so a
/// dead link ends in a retry.
struct StallGuard<R> {
    inner: R,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.sleep = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "download stalled")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
