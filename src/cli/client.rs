//! Server mode: the `/admin` routes of a running server, over HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::Failure;
use super::progress::Tally;
use crate::config::{Secret, StoreTarget};
use crate::http::headers::X_RECORD_COUNT;
use crate::service::jsonl::{ImportReport, JSONL_MEDIA_TYPE};

const UPLOAD_CHUNK: usize = 64 * 1024;

/// A client for one server's admin routes.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl Admin {
    pub fn new(target: &StoreTarget) -> Result<Self, Failure> {
        let base = target.server.trim().trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            return Err(Failure(format!(
                "{base}: this build speaks plain http:// only; reach the server through \
                 a local address or a TLS-terminating tunnel"
            )));
        }
        if !base.starts_with("http://") {
            return Err(Failure(format!(
                "--server must be an http:// URL such as http://127.0.0.1:8080, not {base:?}"
            )));
        }
        let token = target.auth.resolve().map_err(Failure)?;
        // No overall timeout: a transfer takes as long as the store is big.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Self { http, base, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {}", token.0)),
            None => request,
        }
    }

    /// Send `request` and turn every failure into one explanatory line.
    async fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|e| {
            Failure(format!(
                "cannot reach the server at {}: {} (is it running? For a stopped server, \
                 use --data-dir DIR)",
                self.base,
                chain(&e)
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        let hint = if status == StatusCode::UNAUTHORIZED {
            if self.token.is_some() {
                " (the token was refused)"
            } else {
                " (pass --token or set TIDEMARK_AUTH_TOKEN)"
            }
        } else {
            ""
        };
        Err(Failure(format!("{path} answered {status}: {detail}{hint}")))
    }

    /// Download `/admin/backup` into `sink`. Returns the record count the server reported.
    pub async fn backup(
        &self,
        sink: &mut (impl AsyncWrite + Unpin),
        tally: &Tally,
    ) -> Result<Option<u64>, Failure> {
        let path = "/admin/backup";
        let response = self
            .send(path, self.request(reqwest::Method::GET, path))
            .await?;
        let records = response
            .headers()
            .get(X_RECORD_COUNT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        download(path, response, sink, tally).await?;
        Ok(records)
    }

    /// Download `/admin/export` into `sink`.
    pub async fn export(
        &self,
        sink: &mut (impl AsyncWrite + Unpin),
        tally: &Tally,
    ) -> Result<(), Failure> {
        let path = "/admin/export";
        let response = self
            .send(path, self.request(reqwest::Method::GET, path))
            .await?;
        download(path, response, sink, tally).await
    }

    /// Upload `source` to `/admin/import` and return the server's report.
    pub async fn import(
        &self,
        source: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<ImportReport, Failure> {
        let path = "/admin/import";
        let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(source, UPLOAD_CHUNK));
        let request = self
            .request(reqwest::Method::POST, path)
            .header(CONTENT_TYPE, JSONL_MEDIA_TYPE)
            .body(body);
        let response = self.send(path, request).await?;
        let body = response.bytes().await.map_err(|e| {
            Failure(format!(
                "{path}: the answer was cut short: {}; records sent so far may have been \
                 applied (importing again is safe)",
                chain(&e)
            ))
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| Failure(format!("{path}: the answer is not an import report: {e}")))
    }
}

/// Copy a response body into `sink`; a body cut short is an error, never a short file.
async fn download(
    path: &str,
    mut response: reqwest::Response,
    sink: &mut (impl AsyncWrite + Unpin),
    tally: &Tally,
) -> Result<(), Failure> {
    if let Some(total) = response.content_length() {
        tally.expect(total);
    }
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            Failure(format!(
                "{path}: the transfer broke off after {} bytes: {}",
                tally.bytes(),
                chain(&e)
            ))
        })?;
        let Some(chunk) = chunk else {
            break;
        };
        sink.write_all(&chunk)
            .await
            .map_err(|e| Failure(format!("cannot write the output: {e}")))?;
        tally.add(&chunk);
    }
    sink.flush()
        .await
        .map_err(|e| Failure(format!("cannot write the output: {e}")))
}

/// An error with its causes, which reqwest keeps out of its own message.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
