//! The reqwest transport.

use std::time::Duration;

use super::{BoxFuture, HttpClient, TransportError};
use crate::error::{TransportKind, WxError};

/// Settings of the [`ReqwestClient`].
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Time allowed for DNS, TCP and TLS.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange, body included.
    pub timeout: Duration,
    /// Responses larger than this are refused. `user/get` pages of 10 000 OpenIDs are about
    /// 320 KiB; the default leaves ample room.
    pub max_body_bytes: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_body_bytes: 4 * 1024 * 1024,
            user_agent: concat!("wx-api/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// An [`HttpClient`] on reqwest with rustls, no redirects and bounded time and size.
///
/// # Security
///
/// reqwest's errors print the request URL, and our URLs carry `access_token=` and `secret=`.
/// Every error is passed through `without_url()` before it leaves this type.
#[derive(Clone, Debug)]
pub struct ReqwestClient {
    inner: reqwest::Client,
    max_body_bytes: usize,
}

impl ReqwestClient {
    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`WxError::Transport`] if reqwest cannot build the client (TLS backend failure).
    pub fn new(config: &HttpConfig) -> Result<Self, WxError> {
        let inner = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| WxError::Transport {
                kind: TransportKind::Other,
                endpoint: "(client setup)",
                source: Some(Box::new(e.without_url())),
            })?;
        Ok(Self {
            inner,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Wraps an existing reqwest client.
    ///
    /// # Security
    ///
    /// The caller must have built it with `redirect::Policy::none()`; a followed redirect
    /// would carry the query string, token included, to wherever it points.
    pub fn from_reqwest(inner: reqwest::Client, max_body_bytes: usize) -> Self {
        Self {
            inner,
            max_body_bytes,
        }
    }

    async fn send_inner(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let request = reqwest::Request::try_from(request).map_err(transport)?;
        let mut response = self.inner.execute(request).await.map_err(transport)?;
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body_bytes as u64)
        {
            return Err(TransportError::new(TransportKind::BodyTooLarge, None));
        }
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(TransportError::new(TransportKind::BodyTooLarge, None));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| TransportError::new(TransportKind::Other, Some(Box::new(e))))
    }
}

/// Classifies a reqwest error and strips its URL.
fn transport(err: reqwest::Error) -> TransportError {
    let kind = if err.is_timeout() {
        TransportKind::Timeout
    } else if err.is_connect() {
        TransportKind::Connect
    } else if err.is_body() || err.is_decode() {
        TransportKind::Body
    } else if err.is_request() || err.is_builder() {
        TransportKind::Request
    } else {
        TransportKind::Other
    };
    TransportError::new(kind, Some(Box::new(err.without_url())))
}

impl HttpClient for ReqwestClient {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>, TransportError>> {
        Box::pin(self.send_inner(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::hosts::Hosts;
    use crate::ids::AppId;
    use crate::secret::AppSecret;
    use std::error::Error as _;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CANARY: &str = "CanarySecret0123456789";

    /// Every string an error can produce: Display, Debug, and the whole source chain.
    fn all_text(err: &WxError) -> String {
        let mut s = format!("{err} {err:?}");
        let mut src = err.source();
        while let Some(e) = src {
            s.push_str(&format!(" {e} {e:?}"));
            src = e.source();
        }
        s
    }

    fn client_for(base: &str, config: &HttpConfig) -> Client {
        Client::with_http(
            Hosts::single(base).unwrap(),
            Arc::new(ReqwestClient::new(config).unwrap()),
        )
    }

    #[tokio::test]
    async fn connect_error_does_not_leak_the_secret() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = client_for(&format!("http://127.0.0.1:{port}"), &HttpConfig::default());
        let err = client
            .fetch_access_token(
                &AppId::parse("wx2c2769f8efd9abc2").unwrap(),
                &AppSecret::new(CANARY),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WxError::Transport { .. }), "{err:?}");
        let text = all_text(&err);
        assert!(!text.contains(CANARY), "{text}");
        assert!(!text.contains("secret="), "{text}");
    }

    /// A one-shot HTTP server on loopback that answers every connection with `response`.
    async fn serve(response: impl Into<Vec<u8>>, delay: Duration) -> String {
        let response: Arc<Vec<u8>> = Arc::new(response.into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let base = serve(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let err = client_for(&base, &HttpConfig::default())
            .fetch_access_token(
                &AppId::parse("wx2c2769f8efd9abc2").unwrap(),
                &AppSecret::new(CANARY),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, WxError::HttpStatus { status: 302, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn timeouts_are_classified_and_redacted() {
        let base = serve(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..],
            Duration::from_secs(5),
        )
        .await;
        let config = HttpConfig {
            timeout: Duration::from_millis(200),
            ..HttpConfig::default()
        };
        let err = client_for(&base, &config)
            .fetch_access_token(
                &AppId::parse("wx2c2769f8efd9abc2").unwrap(),
                &AppSecret::new(CANARY),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                WxError::Transport {
                    kind: TransportKind::Timeout,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!all_text(&err).contains(CANARY));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let body = format!(
            r#"{{"access_token":"{}","expires_in":7200}}"#,
            "x".repeat(200)
        );
        let base = serve(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            Duration::ZERO,
        )
        .await;
        let config = HttpConfig {
            max_body_bytes: 10,
            ..HttpConfig::default()
        };
        let err = client_for(&base, &config)
            .fetch_access_token(
                &AppId::parse("wx2c2769f8efd9abc2").unwrap(),
                &AppSecret::new(CANARY),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                WxError::Transport {
                    kind: TransportKind::BodyTooLarge,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
