//! The request side of the two text dialects ttserver serves on the Tyrant port, the
//! memcached subset and the HTTP/1.x subset: bytes in, a [`TextRequest`] out.
//!
//! A request whose first byte is not `C8` is read as a line up to LF; CR bytes are
//! dropped wherever they are and the line is split on runs of spaces and tabs. A
//! memcached command word (see [`TextCommand`]) makes it memcached; otherwise a line of
//! at least three tokens whose third starts with `HTTP/1.` is HTTP. Anything else can
//! never become a request (`Err`: close without a reply, as ttserver does).
//!
//! Like the binary decoder, [`decode`] answers `Ok(None)` until everything the request
//! announces is buffered, and caps what it waits for before any of it arrives: a line
//! (and an HTTP head) at [`MAX_LINE`] bytes, a memcached data block or an HTTP body at
//! the configured value limit. It performs no I/O and knows nothing about storage.
//! Replies and deliberate differences: `docs/tyrant-protocol.md`, "Text dialects".

use super::command::{Dialect, TextCommand};
use super::wire::{FrameError, Limits};

/// Longest text line (and longest HTTP request head) waited for; beyond it the
/// connection is closed without a reply.
pub const MAX_LINE: usize = 64 << 10;

/// One decoded text request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextRequest {
    Memcached(McRequest),
    Http(HttpRequest),
}

/// A memcached request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McRequest {
    /// set, add, replace, append, prepend: the data block read in full.
    Store {
        command: TextCommand,
        key: Vec<u8>,
        value: Vec<u8>,
        noreply: bool,
    },
    /// get and gets.
    Get {
        keys: Vec<Vec<u8>>,
    },
    Delete {
        key: Vec<u8>,
        noreply: bool,
    },
    /// incr and decr (`command` says which); `amount` parsed like C `atoll`.
    Incr {
        command: TextCommand,
        key: Vec<u8>,
        amount: i64,
        noreply: bool,
    },
    Stats,
    FlushAll {
        noreply: bool,
    },
    Version,
    /// Close without a reply.
    Quit,
    /// A command with too few arguments: `CLIENT_ERROR error`, then close.
    TooFewArguments(TextCommand),
}

impl McRequest {
    /// Its row in the text table (`None` for quit).
    pub fn command(&self) -> Option<TextCommand> {
        Some(match self {
            McRequest::Store { command, .. } | McRequest::Incr { command, .. } => *command,
            McRequest::TooFewArguments(command) => *command,
            McRequest::Get { .. } => TextCommand::McGet,
            McRequest::Delete { .. } => TextCommand::McDelete,
            McRequest::Stats => TextCommand::McStats,
            McRequest::FlushAll { .. } => TextCommand::McFlushAll,
            McRequest::Version => TextCommand::McVersion,
            McRequest::Quit => return None,
        })
    }
}

/// An HTTP request: the headers ttserver looks at, the key from the URI, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub command: TextCommand,
    /// The URI without `http://host[:port]` and the leading `/`, URL-decoded; the
    /// query string is part of the key.
    pub key: Vec<u8>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `X-TT-PDMODE`: 1 = putkeep, 2 = putcat, anything else = put.
    pub pdmode: i64,
    /// `X-TT-XNAME`: the ext function of a POST.
    pub xname: Option<Vec<u8>>,
    /// `X-TT-MNAME`: the misc function of a POST.
    pub mname: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

/// Decodes one text request from the start of `buf` (whose first byte is not `C8`).
///
/// * `Ok(None)`: incomplete; read more and call again.
/// * `Ok(Some((request, consumed)))`: pipelined bytes after it are left alone.
/// * `Err(_)`: never a request; close the connection without a reply.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(TextRequest, usize)>, FrameError> {
    let Some(line_end) = find_line(buf, 0)? else {
        return Ok(None);
    };
    let tokens = tokens(&buf[..line_end]);
    let next = line_end + 1;
    let Some(first) = tokens.first() else {
        return Err(FrameError::Malformed("empty text line"));
    };
    if first.as_slice() == b"quit" {
        return Ok(Some((TextRequest::Memcached(McRequest::Quit), next)));
    }
    if let Some(command) = TextCommand::from_word(Dialect::Memcached, first) {
        let decoded = memcached(command, &tokens, buf, next, limits)?;
        return Ok(decoded.map(|(r, used)| (TextRequest::Memcached(r), used)));
    }
    if tokens.get(2).is_some_and(|v| v.starts_with(b"HTTP/1.")) {
        let command = TextCommand::from_word(Dialect::Http, first)
            .ok_or(FrameError::Malformed("unsupported HTTP method"))?;
        let decoded = http(command, &tokens, buf, next, limits)?;
        return Ok(decoded.map(|(r, used)| (TextRequest::Http(r), used)));
    }
    Err(FrameError::Malformed("text line in no dialect"))
}

/// Where the line starting at `from` ends (its LF), `None` if not yet buffered; a line
/// longer than [`MAX_LINE`] is an error whether or not its LF has arrived.
fn find_line(buf: &[u8], from: usize) -> Result<Option<usize>, FrameError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|b| *b == b'\n') {
        Some(n) if n <= MAX_LINE => Ok(Some(from + n)),
        None if rest.len() <= MAX_LINE => Ok(None),
        _ => Err(FrameError::Malformed("text line over limit")),
    }
}

/// A line without its CR bytes.
fn without_cr(line: &[u8]) -> Vec<u8> {
    line.iter().copied().filter(|b| *b != b'\r').collect()
}

/// The line's tokens: CR dropped, split on runs of spaces and tabs.
fn tokens(line: &[u8]) -> Vec<Vec<u8>> {
    without_cr(line)
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|t| !t.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn is_noreply(token: Option<&Vec<u8>>) -> bool {
    token.is_some_and(|t| t.as_slice() == b"noreply")
}

fn memcached(
    command: TextCommand,
    tokens: &[Vec<u8>],
    buf: &[u8],
    next: usize,
    limits: &Limits,
) -> Result<Option<(McRequest, usize)>, FrameError> {
    let minimum = match command {
        TextCommand::McSet
        | TextCommand::McAdd
        | TextCommand::McReplace
        | TextCommand::McAppend
        | TextCommand::McPrepend => 5,
        TextCommand::McIncr | TextCommand::McDecr => 3,
        TextCommand::McGet | TextCommand::McDelete => 2,
        _ => 1,
    };
    if tokens.len() < minimum {
        return Ok(Some((McRequest::TooFewArguments(command), next)));
    }
    let token = |i: usize| tokens.get(i).cloned().unwrap_or_default();
    let request = match command {
        TextCommand::McGet => McRequest::Get {
            keys: tokens.iter().skip(1).cloned().collect(),
        },
        TextCommand::McDelete => McRequest::Delete {
            key: token(1),
            noreply: is_noreply(tokens.get(2)) || is_noreply(tokens.get(3)),
        },
        TextCommand::McIncr | TextCommand::McDecr => McRequest::Incr {
            command,
            key: token(1),
            amount: c_atoll(&token(2)),
            noreply: is_noreply(tokens.get(3)),
        },
        TextCommand::McStats => McRequest::Stats,
        TextCommand::McVersion => McRequest::Version,
        TextCommand::McFlushAll => McRequest::FlushAll {
            noreply: is_noreply(tokens.get(1)) || is_noreply(tokens.get(2)),
        },
        // The storage commands: a data block of exactly <bytes>, then an empty line.
        _ => {
            let size = usize::try_from(c_atoll(&token(4)))
                .map_err(|_| FrameError::Malformed("negative memcached data length"))?;
            if size > limits.max_value_bytes {
                return Err(FrameError::Malformed("memcached data block over limit"));
            }
            let data_end = next.saturating_add(size);
            let Some(value) = buf.get(next..data_end) else {
                return Ok(None);
            };
            let Some(terminator) = find_line(buf, data_end)? else {
                return Ok(None);
            };
            if !without_cr(&buf[data_end..terminator]).is_empty() {
                return Err(FrameError::Malformed(
                    "memcached data block not followed by CRLF",
                ));
            }
            let request = McRequest::Store {
                command,
                key: token(1),
                value: value.to_vec(),
                noreply: is_noreply(tokens.get(5)),
            };
            return Ok(Some((request, terminator + 1)));
        }
    };
    Ok(Some((request, next)))
}

fn http(
    command: TextCommand,
    tokens: &[Vec<u8>],
    buf: &[u8],
    mut next: usize,
    limits: &Limits,
) -> Result<Option<(HttpRequest, usize)>, FrameError> {
    let mut request = HttpRequest {
        command,
        key: key_from_uri(tokens.get(1).map(Vec::as_slice).unwrap_or_default()),
        keep_alive: tokens.get(2).map(Vec::as_slice) != Some(b"HTTP/1.0"),
        pdmode: 0,
        xname: None,
        mname: None,
        body: Vec::new(),
    };
    let mut content_length = 0usize;
    loop {
        let Some(end) = find_line(buf, next)? else {
            if buf.len() > MAX_LINE {
                return Err(FrameError::Malformed("HTTP request head over limit"));
            }
            return Ok(None);
        };
        let line = without_cr(&buf[next..end]);
        next = end + 1;
        if next > MAX_LINE {
            return Err(FrameError::Malformed("HTTP request head over limit"));
        }
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii().to_ascii_lowercase();
        let value = line[colon + 1..].trim_ascii().to_vec();
        match name.as_slice() {
            b"connection" if value.eq_ignore_ascii_case(b"close") => request.keep_alive = false,
            b"connection" if value.eq_ignore_ascii_case(b"keep-alive") => request.keep_alive = true,
            b"content-length" => {
                content_length = usize::try_from(c_atoll(&value))
                    .map_err(|_| FrameError::Malformed("negative HTTP Content-Length"))?;
                if content_length > limits.max_value_bytes {
                    return Err(FrameError::Malformed("HTTP body over limit"));
                }
            }
            b"x-tt-pdmode" => request.pdmode = c_atoll(&value),
            b"x-tt-xname" => request.xname = Some(value),
            b"x-tt-mname" => request.mname = Some(value),
            _ => {}
        }
    }
    let body_end = next.saturating_add(content_length);
    let Some(body) = buf.get(next..body_end) else {
        return Ok(None);
    };
    request.body = body.to_vec();
    Ok(Some((request, body_end)))
}

/// ttserver's key from a request URI: an `http://host[:port]` prefix dropped, then a
/// leading `/`, then URL-decoded (`%XX`, `+` as a space), query string included.
fn key_from_uri(uri: &[u8]) -> Vec<u8> {
    let mut path = uri;
    if path.len() >= 7
        && path[..7].eq_ignore_ascii_case(b"http://")
        && let Some(slash) = path[7..].iter().position(|b| *b == b'/')
    {
        path = &path[7 + slash..];
    }
    let path = path.strip_prefix(b"/").unwrap_or(path);
    url_decode(path)
}

/// `%XX` and `+` decoding, as ttserver's `tcurldecode` (a malformed escape stays as is).
pub fn url_decode(bytes: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// Bytes ttserver's `tcurlencode` leaves as they are besides letters and digits.
const URL_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// URL-encodes like `tcurlencode`: `%XX` (upper-case hex) for all but letters, digits
/// and `_-.!~*'()`.
pub fn url_encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, URL_KEEP).to_string()
}

/// The values of a form-encoded body, in order (names are ignored, as ttserver does).
pub fn form_values(body: &[u8]) -> Vec<Vec<u8>> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(eq) => url_decode(&pair[eq + 1..]),
            None => Vec::new(),
        })
        .collect()
}

/// A number parsed like C `atoll`: leading blanks, an optional sign, the leading
/// digits (saturating); no digits = 0.
pub fn c_atoll(bytes: &[u8]) -> i64 {
    let text = bytes.trim_ascii_start();
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = digits
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<Option<(TextRequest, usize)>, FrameError> {
        decode(bytes, &Limits::default())
    }

    #[test]
    fn memcached_set_waits_for_its_data_block() {
        assert_eq!(dec(b"set k 0 0 3\r\nab"), Ok(None));
        assert_eq!(dec(b"set k 0 0 3\r\nabc\r"), Ok(None));
        let (request, used) = dec(b"set k 0 0 3\r\nabc\r\nget k\r\n").unwrap().unwrap();
        assert_eq!(used, 18);
        assert_eq!(
            request,
            TextRequest::Memcached(McRequest::Store {
                command: TextCommand::McSet,
                key: b"k".to_vec(),
                value: b"abc".to_vec(),
                noreply: false
            })
        );
        assert!(dec(b"set k 0 0 3\r\nabcX\r\n").is_err());
        assert!(dec(b"set k 0 0 -1\r\n").is_err());
        assert!(dec(b"set k 0 0 99999999999\r\n").is_err());
    }

    #[test]
    fn lines_are_capped_before_their_end_arrives() {
        assert_eq!(dec(&vec![b'g'; MAX_LINE]), Ok(None));
        assert!(dec(&vec![b'g'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn http_keys_and_headers() {
        let (request, used) =
            dec(b"PUT http://h:1/a%20b+c?x=1 HTTP/1.0\r\nconnection: Keep-Alive\r\nX-TT-PDMODE: 2\r\nContent-Length: 2\r\n\r\nhiGET")
                .unwrap()
                .unwrap();
        let TextRequest::Http(http) = request else {
            panic!("not HTTP");
        };
        assert_eq!(http.key, b"a b c?x=1");
        assert!(http.keep_alive);
        assert_eq!(http.pdmode, 2);
        assert_eq!(http.body, b"hi");
        assert_eq!(used, 100);
        assert!(dec(b"PATCH /k HTTP/1.1\r\n\r\n").is_err());
        assert!(dec(b"GET /k HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert_eq!(dec(b"GET /k HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn form_values_and_url_encoding() {
        assert_eq!(
            form_values(b"a=k1&b=k%202&c"),
            vec![b"k1".to_vec(), b"k 2".to_vec(), vec![]]
        );
        assert_eq!(url_encode(b"a b/~*"), "a%20b%2F~*");
        assert_eq!(c_atoll(b" -12x"), -12);
        assert_eq!(c_atoll(b"\x05\0\0\0"), 0);
    }
}
