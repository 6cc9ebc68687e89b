//! The hub's one HTTP client to the platform: hyper's pooled client over
//! rustls (Mozilla roots), for the proxy and, as wx-api's transport, for
//! every token, ticket and web-authorization call. It never follows
//! redirects, bounds each exchange in time and size, and reports failures by
//! kind only: the request URL carries tokens and secrets.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wx_api::client::{BoxFuture, HttpClient, TransportError};
use wx_api::error::TransportKind;

/// The pooled client type.
pub type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// A pooled HTTP/1 client for `http://` and `https://` upstreams.
pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// wx-api's transport over the pooled client.
#[derive(Clone, Debug)]
pub struct Transport {
    client: UpstreamClient,
    timeout: Duration,
    max_body_bytes: usize,
}

impl Transport {
    /// Exchanges bounded by `timeout` each, answers by `max_body_bytes`.
    pub fn new(client: UpstreamClient, timeout: Duration, max_body_bytes: usize) -> Transport {
        Transport {
            client,
            timeout,
            max_body_bytes,
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let (parts, body) = request.into_parts();
        let request =
            http::Request::from_parts(parts, http_body_util::Full::new(Bytes::from(body)));
        let max = self.max_body_bytes;
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                TransportError::new(
                    if e.is_connect() {
                        TransportKind::Connect
                    } else {
                        TransportKind::Other
                    },
                    None,
                )
            })?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    let kind = if e.is::<http_body_util::LengthLimitError>() {
                        TransportKind::BodyTooLarge
                    } else {
                        TransportKind::Body
                    };
                    TransportError::new(kind, None)
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| TransportError::new(TransportKind::Timeout, None))?
    }
}

impl HttpClient for Transport {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>, TransportError>> {
        Box::pin(self.exchange(request))
    }
}
