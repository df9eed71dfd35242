//! tough's [`Transport`] for metadata over our HTTP client (and `file://` for local mirrors).
//! Sizes are bounded by tough itself (snapshot-listed lengths, or its `Limits`).

use futures_util::StreamExt;
use tough::{FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::http::{HttpClient, HttpError};

/// HTTP(S) through [`HttpClient`], `file://` through tough's filesystem transport.
#[derive(Debug, Clone)]
pub struct UpdateTransport {
    pub http: HttpClient,
}

impl UpdateTransport {
    async fn fetch_http(&self, url: Url) -> Result<TransportStream, TransportError> {
        let response = self.http.get(&url, 0).await.map_err(|e| {
            let kind = match &e {
                HttpError::Status { status: 404 | 403 | 410, .. } => TransportErrorKind::FileNotFound,
                HttpError::Unsupported { .. } | HttpError::PlainHttp { .. } => TransportErrorKind::UnsupportedUrlScheme,
                _ => TransportErrorKind::Other,
            };
            TransportError::new_with_cause(kind, url.as_str(), e)
        })?;
        let text = url.to_string();
        let stream = tokio_util::io::ReaderStream::new(response.body)
            .map(move |r| r.map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, &text, e)));
        Ok(Box::pin(stream))
    }
}

#[async_trait::async_trait]
impl Transport for UpdateTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "file" => FilesystemTransport.fetch(url).await,
            _ => self.fetch_http(url).await,
        }
    }
}
