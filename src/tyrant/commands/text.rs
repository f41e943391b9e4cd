//! What each memcached and HTTP request on the Tyrant port does: the same service calls
//! the binary handlers make (so the same `--tyrant-guard prefix` rule for set, add,
//! replace and HTTP PUT), answered as ttserver 1.1.41 answers them
//! (`docs/tyrant-protocol.md`, "Text dialects").

use crate::config::TyrantGuard;
use crate::guard::{Condition, EtagMatch};
use crate::service::WriteOptions;
use crate::service::tyrant::PutMode;

use super::super::command::TextCommand;
use super::super::stat;
use super::super::text::{HttpRequest, McRequest, TextRequest, c_atoll, form_values, url_encode};
use super::{After, Connection, TooLarge};

const TEXT_PLAIN: &str = "text/plain";
const OCTET_STREAM: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";

impl Connection<'_> {
    /// Execute one text request, appending its reply (if any) to `out`.
    pub async fn execute_text(&mut self, request: TextRequest, out: &mut Vec<u8>) -> After {
        let started = std::time::Instant::now();
        let before = out.len();
        let (name, after) = match request {
            TextRequest::Memcached(request) => {
                let name = request.command().map_or("quit", TextCommand::mask_name);
                (name, self.memcached(request, out).await)
            }
            TextRequest::Http(request) => {
                (request.command.mask_name(), self.http(request, out).await)
            }
        };
        let metrics = self.shared.service.metrics();
        let ok = !failed(&out[before..]);
        metrics
            .requests
            .with_label_values(&["tyrant", name, if ok { "ok" } else { "fail" }])
            .inc();
        self.shared
            .request_metrics
            .seconds(metrics)
            .observe(started.elapsed().as_secs_f64());
        after
    }

    async fn memcached(&mut self, request: McRequest, out: &mut Vec<u8>) -> After {
        let Some(command) = request.command() else {
            return After::Close; // quit
        };
        let counters = &self.shared.counters;
        match &request {
            McRequest::Get { keys } => counters.count_n(
                command.counts_as(),
                keys.len().try_into().unwrap_or(u64::MAX),
            ),
            _ => counters.count(command.counts_as()),
        }
        if self.shared.denied.contains_text(command) {
            out.extend_from_slice(b"CLIENT_ERROR forbidden\r\n");
            return After::Continue;
        }
        let service = &self.shared.service;
        match request {
            McRequest::TooFewArguments(_) => {
                out.extend_from_slice(b"CLIENT_ERROR error\r\n");
                return After::Close;
            }
            McRequest::Quit => return After::Close,
            McRequest::Store {
                command,
                key,
                value,
                noreply,
            } => {
                let answer = self.mc_store(command, key, value).await;
                self.shared.counters.put_result(answer == Stored::Yes);
                if !noreply {
                    out.extend_from_slice(match answer {
                        Stored::Yes => b"STORED\r\n".as_slice(),
                        Stored::No => b"NOT_STORED\r\n",
                        Stored::Failed => b"SERVER_ERROR unexpected\r\n",
                    });
                }
            }
            McRequest::Get { keys } => {
                let asked = keys.len();
                match self.get_many(keys).await {
                    Ok(found) => {
                        for _ in found.len()..asked {
                            self.shared.counters.get_miss();
                        }
                        for (key, value) in found {
                            out.extend_from_slice(b"VALUE ");
                            out.extend_from_slice(&key);
                            out.extend_from_slice(format!(" 0 {}\r\n", value.len()).as_bytes());
                            out.extend_from_slice(&value);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"END\r\n");
                    }
                    // Not a reference answer: the reply would exceed the reply budget.
                    Err(TooLarge) => out.extend_from_slice(b"SERVER_ERROR out of memory\r\n"),
                }
            }
            McRequest::Delete { key, noreply } => {
                let deleted = service.delete_unguarded(key).await;
                self.shared.counters.out_result(matches!(deleted, Ok(true)));
                if !noreply {
                    out.extend_from_slice(match deleted {
                        Ok(true) => b"DELETED\r\n".as_slice(),
                        Ok(false) => b"NOT_FOUND\r\n",
                        Err(_) => b"SERVER_ERROR unexpected\r\n",
                    });
                }
            }
            McRequest::Incr {
                command,
                key,
                amount,
                noreply,
            } => {
                let decrement = command == TextCommand::McDecr;
                // Decimal text, unlike binary addint; non-numeric reads as 0; never below 0.
                let result = service
                    .update_unguarded(key, move |current| {
                        let number = c_atoll(current?);
                        let sum = if decrement {
                            number.wrapping_sub(amount)
                        } else {
                            number.wrapping_add(amount)
                        }
                        .max(0);
                        Some((sum.to_string().into_bytes(), sum))
                    })
                    .await;
                if !noreply {
                    match result {
                        Ok(Some(sum)) => out.extend_from_slice(format!("{sum}\r\n").as_bytes()),
                        Ok(None) => out.extend_from_slice(b"NOT_FOUND\r\n"),
                        Err(_) => out.extend_from_slice(b"SERVER_ERROR unexpected\r\n"),
                    }
                }
            }
            McRequest::Stats => {
                let shared = self.shared;
                let text =
                    stat::memcached_stats(&shared.service, &shared.counters, shared.started).await;
                out.extend_from_slice(text.as_bytes());
            }
            McRequest::FlushAll { noreply } => {
                let ok = service.vanish().await.is_ok();
                if ok {
                    self.cursor = super::Cursor::Unset;
                }
                if !noreply {
                    out.extend_from_slice(if ok {
                        b"OK\r\n".as_slice()
                    } else {
                        b"SERVER_ERROR unexpected\r\n"
                    });
                }
            }
            McRequest::Version => {
                out.extend_from_slice(format!("VERSION {}\r\n", stat::VERSION).as_bytes())
            }
        }
        After::Continue
    }

    /// set/add/replace/append/prepend. set and add are the binary put and putkeep
    /// (guarded under `--tyrant-guard prefix`); replace is a put that needs a live value
    /// (guarded too); append and prepend need one and stay unguarded, like putcat.
    async fn mc_store(&self, command: TextCommand, key: Vec<u8>, value: Vec<u8>) -> Stored {
        let service = &self.shared.service;
        let max_value = service.policy().max_value_bytes;
        let from_bool = |ok: bool| if ok { Stored::Yes } else { Stored::No };
        match command {
            TextCommand::McSet => {
                if self.plain_put(key, value, PutMode::Overwrite).await {
                    Stored::Yes
                } else {
                    Stored::Failed
                }
            }
            TextCommand::McAdd => from_bool(self.plain_put(key, value, PutMode::Keep).await),
            TextCommand::McReplace if self.shared.settings.guard == TyrantGuard::Prefix => {
                let only_live = WriteOptions {
                    condition: Condition::IfMatch(EtagMatch::Any),
                    ..WriteOptions::default()
                };
                from_bool(self.guarded_put(key, value, only_live).await.is_ok())
            }
            _ => {
                let combine = match command {
                    TextCommand::McAppend => Combine::Append,
                    TextCommand::McPrepend => Combine::Prepend,
                    _ => Combine::Replace,
                };
                let result = service
                    .update_unguarded(key, move |current| {
                        let current = current?;
                        let combined = match combine {
                            Combine::Replace => value,
                            Combine::Append => [current, &value].concat(),
                            Combine::Prepend => [&value, current].concat(),
                        };
                        (combined.len() <= max_value).then_some((combined, ()))
                    })
                    .await;
                match result {
                    Ok(Some(())) => Stored::Yes,
                    Ok(None) => Stored::No,
                    Err(_) => Stored::Failed,
                }
            }
        }
    }

    async fn http(&mut self, request: HttpRequest, out: &mut Vec<u8>) -> After {
        let HttpRequest {
            command,
            key,
            keep_alive,
            pdmode,
            xname,
            mname,
            body,
        } = request;
        let after = if keep_alive {
            After::Continue
        } else {
            After::Close
        };
        self.shared.counters.count(command.counts_as());
        if self.shared.denied.contains_text(command) {
            if command == TextCommand::HttpHead {
                out.extend_from_slice(b"HTTP/1.1 403 Forbidden\r\n\r\n");
            } else {
                text_response(out, 403);
            }
            return after;
        }
        let service = &self.shared.service;
        match command {
            TextCommand::HttpGet => match service.get(key).await {
                Ok(Some(entry)) => response(out, 200, OCTET_STREAM, &entry.value, true),
                _ => {
                    self.shared.counters.get_miss();
                    text_response(out, 404);
                }
            },
            TextCommand::HttpHead => match service.get(key).await {
                Ok(Some(entry)) => response(out, 200, OCTET_STREAM, &entry.value, false),
                _ => out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            },
            TextCommand::HttpPut => {
                let (ok, refused) = match pdmode {
                    1 => (self.plain_put(key, body, PutMode::Keep).await, 409),
                    2 => {
                        let ok = service
                            .put_unguarded(key, body, PutMode::Concat)
                            .await
                            .unwrap_or(false);
                        (ok, 500)
                    }
                    _ => (self.plain_put(key, body, PutMode::Overwrite).await, 500),
                };
                self.shared.counters.put_result(ok);
                text_response(out, if ok { 201 } else { refused });
            }
            TextCommand::HttpDelete => {
                let ok = service.delete_unguarded(key).await.unwrap_or(false);
                self.shared.counters.out_result(ok);
                text_response(out, if ok { 200 } else { 404 });
            }
            TextCommand::HttpPost => {
                if let Some(name) = xname {
                    match self.ext_call(&name, key, body).await {
                        Ok(timestamp) => {
                            let result = timestamp.to_string();
                            response(out, 200, OCTET_STREAM, result.as_bytes(), true);
                        }
                        Err(_) => text_response(out, 500),
                    }
                } else if let Some(name) = mname {
                    match self.misc(&name, form_values(&body)).await {
                        Some(items) => {
                            let form = items
                                .iter()
                                .enumerate()
                                .map(|(i, item)| format!("res{}={}", i + 1, url_encode(item)))
                                .collect::<Vec<_>>()
                                .join("&");
                            response(out, 200, FORM, form.as_bytes(), true);
                        }
                        None => text_response(out, 500),
                    }
                } else {
                    text_response(out, 400);
                }
            }
            _ => {
                // OPTIONS
                let shared = self.shared;
                let headers = stat::options_headers(&shared.service, shared.started, self.fd).await;
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nAllow: OPTIONS, GET, HEAD, PUT, POST, DELETE\r\n{headers}\r\n"
                    )
                    .as_bytes(),
                );
            }
        }
        after
    }
}

/// How a storage command ended: `STORED`, `NOT_STORED`, or `SERVER_ERROR unexpected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Yes,
    No,
    Failed,
}

/// How replace/append/prepend combine with the live value they need.
#[derive(Debug, Clone, Copy)]
enum Combine {
    Replace,
    Append,
    Prepend,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    }
}

/// A response with a body (or, for HEAD, only the headers that describe it).
fn response(out: &mut Vec<u8>, status: u16, content_type: &str, body: &[u8], with_body: bool) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            reason(status),
            body.len()
        )
        .as_bytes(),
    );
    if with_body {
        out.extend_from_slice(body);
    }
}

/// ttserver's text answers: the reason phrase and a newline as a `text/plain` body.
fn text_response(out: &mut Vec<u8>, status: u16) {
    let body = format!("{}\n", reason(status));
    response(out, status, TEXT_PLAIN, body.as_bytes(), true);
}

/// Whether a text reply reports a failure (for the request metrics).
fn failed(reply: &[u8]) -> bool {
    const FAILURES: [&[u8]; 5] = [
        b"NOT_",
        b"SERVER_ERROR",
        b"CLIENT_ERROR",
        b"HTTP/1.1 4",
        b"HTTP/1.1 5",
    ];
    FAILURES.iter().any(|prefix| reply.starts_with(prefix))
}
