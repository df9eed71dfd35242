//! Just enough HTTP/1.1 for sphere-cloud's device API: `POST` a JSON body, read a JSON answer.
//!
//! Why not a client crate: the device makes three kinds of request to one server, and hyper
//! plus a connector is a large share of a device binary's size. One request per connection
//! (`Connection: close`), bodies bounded, responses with Content-Length, chunked encoding or
//! read-to-close. HTTPS uses rustls with the configured CA (no system roots on the device).
//!
//! Hosts should be IP literals on the device: its static libc has no NSS for name lookups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response body accepted (certificates and results are a few KiB).
const MAX_RESPONSE: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL {0:?}: use http://IP:PORT or https://HOST:PORT")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("talking to {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{addr} did not answer within {TIMEOUT:?}")]
    Timeout { addr: String },
    #[error("malformed HTTP response from {addr}: {what}")]
    Malformed { addr: String, what: &'static str },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A parsed base URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let bad = || HttpError::Url(url.to_owned());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
            None => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Endpoint { tls, host: host.trim_matches(['[', ']']).to_owned(), port, base_path: path.to_owned() })
    }

    fn display(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// `POST endpoint.base_path + path` with a JSON body.
pub async fn post_json(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    body: &[u8],
) -> Result<Response, HttpError> {
    let addr = endpoint.display();
    tokio::time::timeout(TIMEOUT, post_inner(endpoint, tls, path, body))
        .await
        .map_err(|_| HttpError::Timeout { addr })?
}

async fn post_inner(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    body: &[u8],
) -> Result<Response, HttpError> {
    let addr = endpoint.display();
    let target: SocketAddr = match endpoint.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, endpoint.port),
        Err(_) => tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| HttpError::Connect { addr: addr.clone(), source })?
            .next()
            .ok_or_else(|| HttpError::Connect { addr: addr.clone(), source: std::io::Error::other("no address") })?,
    };
    let tcp = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|source| HttpError::Connect { addr: addr.clone(), source })?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Stream> = if endpoint.tls {
        let config = tls.ok_or_else(|| HttpError::Tls("https URL but no CA configured (cloud.ca_file)".into()))?;
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| HttpError::Tls(format!("server name {}: {e}", endpoint.host)))?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        Box::new(
            connector.connect(name, tcp).await.map_err(|source| HttpError::Connect { addr: addr.clone(), source })?,
        )
    } else {
        Box::new(tcp)
    };
    let io = |source| HttpError::Io { addr: addr.clone(), source };
    let head = format!(
        "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: sphere-attestd\r\n\r\n",
        endpoint.base_path,
        path,
        addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A server that closes without TLS close_notify: what we have is what we get; the
            // length checks below still catch a truncated body.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE + 16 * 1024 {
            return Err(HttpError::Malformed { addr, what: "response too large" });
        }
        if response_complete(&raw) {
            break;
        }
    }
    parse_response(&raw).map_err(|what| HttpError::Malformed { addr, what })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&raw[..end], &raw[end + 4..]))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn response_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else { return false };
    let head = String::from_utf8_lossy(head);
    match header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false,
    }
}

/// Parse a complete HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<Response, &'static str> {
    let (head, body) = split_head(raw).ok_or("no end of headers")?;
    let head = std::str::from_utf8(head).map_err(|_| "headers are not UTF-8")?;
    let status_line = head.lines().next().ok_or("no status line")?;
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not an HTTP/1.x status line");
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("bad status code")?;
    let body = if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else if let Some(len) = header(head, "content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if len > MAX_RESPONSE {
            return Err("body too large");
        }
        if body.len() < len {
            return Err("body shorter than Content-Length");
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 || out.len() + size > MAX_RESPONSE {
            return Err("truncated or oversized chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let e = Endpoint::parse("http://10.0.2.100:8080/api/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port, e.base_path.as_str()), (false, "10.0.2.100", 8080, "/api"));
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert_eq!(Endpoint::parse("https://cloud.example").unwrap().port, 443);
    }

    #[test]
    fn responses_parse_with_length_and_chunks() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, b"abcd".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
