//! A small HTTP client for the black-box tests, bound to one server's base URL. It
//! speaks only the public API, so it serves every storage engine's suite alike.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Method, RequestBuilder, Response};

use super::TestServer;

/// Requests to one server; `segment` arguments are `/keys/{key}` path segments,
/// percent-encoded as the API expects (`a%2Fb` is the key `a/b`).
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    base: String,
    token: Option<String>,
}

impl Http {
    /// A client for the server at `base` (`http://host:port`); never through a proxy.
    pub fn new(base: impl Into<String>) -> Self {
        let client = Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client builds");
        Self {
            client,
            base: base.into(),
            token: None,
        }
    }

    /// A client for the server at `base` that sends through `client` (e.g. one with a
    /// timeout); `client` should be built with `no_proxy()`.
    pub fn with_client(client: Client, base: impl Into<String>) -> Self {
        Self {
            client,
            base: base.into(),
            token: None,
        }
    }

    /// A client for `server`'s HTTP address.
    pub fn of(server: &TestServer) -> Self {
        Self::new(server.url(""))
    }

    /// The same client, sending `token` as the bearer on every request.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, with the bearer token if this client has one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// PUT `value` as text/plain at `/keys/{segment}` with `timestamp`.
    pub async fn put(&self, segment: &str, timestamp: u64, value: &str) -> Response {
        self.put_with(segment, timestamp, value, |r| r).await
    }

    /// PUT that expires `ttl_secs` seconds from now.
    pub async fn put_with_ttl(
        &self,
        segment: &str,
        timestamp: u64,
        value: &str,
        ttl_secs: u64,
    ) -> Response {
        self.put_with(segment, timestamp, value, |r| {
            r.header("X-TTL", ttl_secs.to_string())
        })
        .await
    }

    /// PUT with extra headers; Content-Type is text/plain unless `extra` sets one.
    pub async fn put_with(
        &self,
        segment: &str,
        timestamp: u64,
        value: &str,
        extra: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        let request = self
            .request(Method::PUT, &format!("/keys/{segment}"))
            .header("X-Write-Timestamp", timestamp.to_string())
            .body(value.to_owned());
        let mut request = extra(request).build().expect("request builds");
        request
            .headers_mut()
            .entry("content-type")
            .or_insert(HeaderValue::from_static("text/plain"));
        self.client
            .execute(request)
            .await
            .expect("request reaches the server")
    }

    pub async fn get(&self, segment: &str) -> Response {
        send(self.request(Method::GET, &format!("/keys/{segment}"))).await
    }

    /// GET, read to the end: status, headers and body.
    pub async fn read(&self, segment: &str) -> (u16, HeaderMap, Vec<u8>) {
        let response = self.get(segment).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        (status, headers, body)
    }

    pub async fn head(&self, segment: &str) -> Response {
        send(self.request(Method::HEAD, &format!("/keys/{segment}"))).await
    }

    pub async fn delete(&self, segment: &str, timestamp: u64) -> Response {
        send(
            self.request(Method::DELETE, &format!("/keys/{segment}"))
                .header("X-Write-Timestamp", timestamp.to_string()),
        )
        .await
    }

    pub async fn touch(&self, segment: &str, ttl: &str) -> Response {
        send(
            self.request(Method::POST, &format!("/keys/{segment}/touch"))
                .header("X-TTL", ttl),
        )
        .await
    }

    /// GET /keys with `query` (encoded by the client, as a client library would).
    pub async fn list(&self, query: &[(&str, &str)]) -> Response {
        send(self.request(Method::GET, "/keys").query(query)).await
    }
}

pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request reaches the server")
}

/// The header `name` as text; panics (failing the test) when it is absent.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("response has no {name} header: {headers:?}"))
        .to_str()
        .expect("header is visible ASCII")
        .to_owned()
}

/// A test server plus the shared client bound to it; the key calls (`api.put`,
/// `api.get`, ...) are the shared client's. Suites add their own helpers in their own
/// `impl Api` blocks.
pub struct Api {
    pub server: TestServer,
    pub http: Http,
}

impl std::ops::Deref for Api {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Api {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut tidemark::config::ServeConfig)) -> Self {
        let server = TestServer::start_with(tweak).await;
        let http = Http::of(&server);
        Self { server, http }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
