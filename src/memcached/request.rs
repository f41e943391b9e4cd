//! The request side of the memcached text protocol (memcached 1.6 `protocol.txt`):
//! bytes in, a [`Request`] out. It performs no I/O and knows nothing about storage.
//!
//! A request is a line up to LF (a CR before the LF is dropped), split on spaces. A
//! storage command's data block must then arrive in full, followed by CRLF. Lines are
//! capped at [`MAX_LINE`] and data blocks at the value
//! limit before any of them arrives. Numbers are parsed strictly, as memcached's
//! `safe_strto*` do: a whole token of digits (with a sign only where one is allowed).

use crate::tyrant::text::MAX_LINE;

/// Longest key memcached accepts.
pub const MAX_KEY_BYTES: usize = 250;

pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";

/// The storage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// get, gets (`with_cas`), gat and gats (`touch`: their exptime).
    Get {
        keys: Vec<Vec<u8>>,
        with_cas: bool,
        touch: Option<i64>,
    },
    Store {
        kind: StoreKind,
        key: Vec<u8>,
        flags: u32,
        exptime: i64,
        /// The CAS unique a `cas` command expects.
        cas: Option<u64>,
        value: Vec<u8>,
        noreply: bool,
    },
    Delete {
        key: Vec<u8>,
        noreply: bool,
    },
    /// incr (`incr: true`) and decr.
    Arith {
        incr: bool,
        key: Vec<u8>,
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: Vec<u8>,
        exptime: i64,
        noreply: bool,
    },
    Stats {
        /// The first argument (`stats settings`, `stats reset`, …); `None` for the
        /// general statistics.
        arg: Option<Vec<u8>>,
    },
    Version,
    Verbosity {
        noreply: bool,
    },
    FlushAll {
        /// The delay (an exptime: seconds up to 30 days, then a Unix time; 0 or less
        /// is now), `None` when it is not a number.
        delay: Option<i64>,
        noreply: bool,
    },
    /// Close without a reply.
    Quit,
    /// `mg ms md ma me mn` (decoded in `meta.rs`).
    Meta(super::meta::Meta),
    /// Answer `reply` (unless `noreply`) and carry on with the next line. memcached
    /// reads the data block of a too-large value and throws it away; `discard` is how
    /// many bytes of it (CRLF included) follow this request.
    Refused {
        reply: &'static str,
        noreply: bool,
        discard: usize,
    },
}

/// Why the connection must close: memcached answers `reply` and hangs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fatal {
    pub reply: &'static str,
}

/// Decodes one request from the start of `buf`.
///
/// * `Ok(None)`: incomplete; read more and call again.
/// * `Ok(Some((request, consumed)))`: pipelined bytes after it are left alone.
/// * `Err(_)`: answer it and close.
pub fn decode(buf: &[u8], max_value_bytes: usize) -> Result<Option<(Request, usize)>, Fatal> {
    let Some(lf) = buf.iter().take(MAX_LINE + 1).position(|b| *b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(Fatal {
                reply: "CLIENT_ERROR line too long",
            });
        }
        return Ok(None);
    };
    let line = &buf[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let next = lf + 1;
    let tokens: Vec<&[u8]> = line
        .split(|b| *b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let refused = |reply, noreply| Request::Refused {
        reply,
        noreply,
        discard: 0,
    };
    let error = refused("ERROR", false);
    let Some((&command, args)) = tokens.split_first() else {
        return Ok(Some((error, next)));
    };
    if command.len() == 2 && command[0] == b'm' {
        return super::meta::decode(command, args, buf, next, max_value_bytes);
    }
    let noreply = args.last().is_some_and(|t| *t == b"noreply");
    let request = match command {
        b"get" | b"gets" | b"gat" | b"gats" => {
            let touches = command.starts_with(b"gat");
            let (touch, keys) = if touches {
                match args.split_first() {
                    Some((exptime, keys)) if !keys.is_empty() => match parse_i64(exptime) {
                        Some(e) => (Some(e), keys),
                        None => {
                            return Ok(Some((
                                refused("CLIENT_ERROR invalid exptime argument", false),
                                next,
                            )));
                        }
                    },
                    _ => return Ok(Some((error, next))),
                }
            } else {
                (None, args)
            };
            if keys.is_empty() {
                error
            } else if !keys.iter().all(|k| valid_key(k)) {
                refused(BAD_FORMAT, false)
            } else {
                Request::Get {
                    keys: keys.iter().map(|k| k.to_vec()).collect(),
                    with_cas: command.ends_with(b"s"),
                    touch,
                }
            }
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let kind = match command {
                b"set" => StoreKind::Set,
                b"add" => StoreKind::Add,
                b"replace" => StoreKind::Replace,
                b"append" => StoreKind::Append,
                b"prepend" => StoreKind::Prepend,
                _ => StoreKind::Cas,
            };
            let fixed = if kind == StoreKind::Cas { 5 } else { 4 };
            if args.len() != fixed && !(args.len() == fixed + 1 && noreply) {
                return Ok(Some((error, next)));
            }
            let (flags, exptime, size) =
                (parse_u32(args[1]), parse_i64(args[2]), parse_i64(args[3]));
            let cas = if kind == StoreKind::Cas {
                match parse_u64(args[4]) {
                    Some(c) => Some(c),
                    None => return Ok(Some((refused(BAD_FORMAT, noreply), next))),
                }
            } else {
                None
            };
            let (Some(flags), Some(exptime), Some(size)) = (flags, exptime, size) else {
                return Ok(Some((refused(BAD_FORMAT, noreply), next)));
            };
            let Ok(size) = usize::try_from(size) else {
                return Ok(Some((refused(BAD_FORMAT, noreply), next)));
            };
            if !valid_key(args[0]) {
                return Ok(Some((refused(BAD_FORMAT, noreply), next)));
            }
            if size > max_value_bytes {
                let request = Request::Refused {
                    reply: "SERVER_ERROR object too large for cache",
                    noreply,
                    discard: size.saturating_add(2),
                };
                return Ok(Some((request, next)));
            }
            let end = next + size;
            let Some(block) = buf.get(next..end + 2) else {
                return Ok(None);
            };
            if &block[size..] != b"\r\n" {
                return Ok(Some((
                    refused("CLIENT_ERROR bad data chunk", noreply),
                    end + 2,
                )));
            }
            let request = Request::Store {
                kind,
                key: args[0].to_vec(),
                flags,
                exptime,
                cas,
                value: block[..size].to_vec(),
                noreply,
            };
            return Ok(Some((request, end + 2)));
        }
        b"delete" => match args {
            [key] | [key, b"noreply"] | [key, b"0"] | [key, b"0", b"noreply"] => {
                if valid_key(key) {
                    Request::Delete {
                        key: key.to_vec(),
                        noreply,
                    }
                } else {
                    refused(BAD_FORMAT, noreply)
                }
            }
            [_, _] | [_, _, _] => refused(
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
                noreply,
            ),
            _ => error,
        },
        b"incr" | b"decr" => match args {
            [key, delta] | [key, delta, b"noreply"] => {
                if !valid_key(key) {
                    refused(BAD_FORMAT, noreply)
                } else if let Some(delta) = parse_u64(delta) {
                    Request::Arith {
                        incr: command == b"incr",
                        key: key.to_vec(),
                        delta,
                        noreply,
                    }
                } else {
                    refused("CLIENT_ERROR invalid numeric delta argument", noreply)
                }
            }
            _ => error,
        },
        b"touch" => match args {
            [key, exptime] | [key, exptime, b"noreply"] => {
                if !valid_key(key) {
                    refused(BAD_FORMAT, noreply)
                } else if let Some(exptime) = parse_i64(exptime) {
                    Request::Touch {
                        key: key.to_vec(),
                        exptime,
                        noreply,
                    }
                } else {
                    refused("CLIENT_ERROR invalid exptime argument", noreply)
                }
            }
            _ => error,
        },
        b"stats" => Request::Stats {
            arg: args.first().map(|a| a.to_vec()),
        },
        b"version" if args.is_empty() => Request::Version,
        b"quit" if args.is_empty() => Request::Quit,
        b"verbosity" => match args {
            [level] | [level, b"noreply"] if parse_u64(level).is_some() => {
                Request::Verbosity { noreply }
            }
            [b"noreply"] => Request::Verbosity { noreply },
            _ => error,
        },
        b"flush_all" => match args {
            [] | [b"noreply"] => Request::FlushAll {
                delay: Some(0),
                noreply,
            },
            [delay] | [delay, b"noreply"] => Request::FlushAll {
                delay: parse_i64(delay),
                noreply,
            },
            _ => error,
        },
        _ => error,
    };
    Ok(Some((request, next)))
}

/// At most [`MAX_KEY_BYTES`], no control characters (spaces cannot reach here).
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.iter().all(|b| *b > b' ' && *b != 0x7f)
}

fn digits(token: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(token).ok()?;
    let body = text.strip_prefix('-').unwrap_or(text);
    (!body.is_empty() && body.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

fn parse_u64(token: &[u8]) -> Option<u64> {
    digits(token)?.parse().ok()
}

fn parse_u32(token: &[u8]) -> Option<u32> {
    digits(token)?.parse().ok()
}

fn parse_i64(token: &[u8]) -> Option<i64> {
    digits(token)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<Option<(Request, usize)>, Fatal> {
        decode(bytes, 1 << 20)
    }

    #[test]
    fn a_storage_command_waits_for_its_data_block_and_its_crlf() {
        assert_eq!(dec(b"set k 5 0 3\r\nab"), Ok(None));
        assert_eq!(dec(b"set k 5 0 3\r\nabc\r"), Ok(None));
        let (request, used) = dec(b"set k 5 -1 3 noreply\r\nabc\r\nget k\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 27);
        assert_eq!(
            request,
            Request::Store {
                kind: StoreKind::Set,
                key: b"k".to_vec(),
                flags: 5,
                exptime: -1,
                cas: None,
                value: b"abc".to_vec(),
                noreply: true,
            }
        );
    }

    #[test]
    fn malformed_lines_get_memcached_errors() {
        let reply = |bytes: &[u8]| match dec(bytes).unwrap().unwrap().0 {
            Request::Refused { reply, .. } => reply,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(reply(b"set k x 0 3\r\n"), BAD_FORMAT);
        assert_eq!(reply(b"set k 0 0 -3\r\n"), BAD_FORMAT);
        assert_eq!(reply(b"set k 4294967296 0 1\r\n"), BAD_FORMAT);
        assert_eq!(reply(b"set k 0 0\r\n"), "ERROR");
        assert_eq!(
            reply(b"set k 0 0 3\r\nabcd\r\n"),
            "CLIENT_ERROR bad data chunk"
        );
        assert_eq!(reply(b"bogus\r\n"), "ERROR");
        assert_eq!(reply(b"\r\n"), "ERROR");
        assert_eq!(
            reply(&[b"get ", &[b'k'; 251][..], b"\r\n"].concat()),
            BAD_FORMAT
        );
        assert_eq!(
            reply(b"incr k x\r\n"),
            "CLIENT_ERROR invalid numeric delta argument"
        );
        assert!(matches!(
            dec(b"set k 0 0 2000000\r\n").unwrap().unwrap().0,
            Request::Refused {
                discard: 2_000_002,
                ..
            }
        ));
    }

    #[test]
    fn lines_are_capped_before_their_end_arrives() {
        assert_eq!(dec(&vec![b'g'; MAX_LINE]), Ok(None));
        assert!(dec(&vec![b'g'; MAX_LINE + 1]).is_err());
    }
}
