//! The request side of the meta commands (`mg ms md ma me mn`, memcached 1.6
//! `protocol.txt`, "Meta Commands"): a line (and, for `ms`, its data block) in, a
//! [`Meta`] out, with memcached's own errors in memcached's order. It performs no I/O.
//!
//! Every flag is one token: a letter, then its token (`T30`, `Oabc`). As in memcached,
//! the flags are checked once for all commands (a flag known to one command is
//! accepted, and ignored, by another); a repeated letter is `CLIENT_ERROR duplicate
//! flag`, an unknown one `CLIENT_ERROR invalid flag`. The flags tidemark cannot answer
//! truthfully ([`unserved`]) are refused as unknown ones.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::request::{BAD_FORMAT, Fatal, Request, valid_key};

/// Longest key token (before base64 decoding), as memcached's `KEY_MAX_LENGTH`.
const MAX_KEY_TOKEN: usize = 250;
/// memcached's `MFLAG_MAX_OPT_LENGTH`: at most this many tokens, the command, its key
/// and memcached's terminal token included.
const MAX_TOKENS: usize = 20;
/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`: an `O` token, its letter included.
const MAX_OPAQUE: usize = 32;

/// Every flag memcached 1.6 knows.
const KNOWN: &[u8] = b"bcCDEfFhIJklLMNOPqRsStTuvx";

/// Known flags tidemark refuses, per command: `h` (hit before) and `l` (last
/// access) need an access record tidemark does not keep; `E` sets an explicit CAS,
/// which tidemark derives from the value instead; `I` (invalidate) and `mg`'s `N`
/// and `R` exist to hand out stale-while-revalidate win tokens (`W`, `X`, `Z`) over
/// a stale state tidemark does not keep.
pub fn unserved(command: MetaCommand, flag: u8) -> bool {
    matches!(flag, b'h' | b'l' | b'E' | b'I')
        || (command == MetaCommand::Get && matches!(flag, b'N' | b'R'))
}

/// The meta commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCommand {
    Get,
    Set,
    Delete,
    Arithmetic,
    Debug,
    Noop,
}

/// What the flags ask for, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaOptions {
    /// `q`: leave out the uninteresting answer (mg `EN`; ms, md, ma success).
    pub quiet: bool,
    /// `v`: answer the value.
    pub value: bool,
    /// `C`: the CAS unique the write expects.
    pub compare_cas: Option<u64>,
    /// `F`: client flags (ms).
    pub client_flags: u32,
    /// `T`: a new exptime.
    pub ttl: Option<i64>,
    /// `N`: create on miss with this exptime (ms in append mode, ma).
    pub vivify: Option<i64>,
    /// `M`: the mode letter.
    pub mode: Option<u8>,
    /// `D` (ma; default 1).
    pub delta: u64,
    /// `J` (ma; default 0).
    pub initial: u64,
    /// `x` (md): empty the value, keep the item.
    pub remove_value: bool,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            quiet: false,
            value: false,
            compare_cas: None,
            client_flags: 0,
            ttl: None,
            vivify: None,
            mode: None,
            delta: 1,
            initial: 0,
            remove_value: false,
        }
    }
}

/// One decoded meta request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub command: MetaCommand,
    /// The key, base64-decoded when `binary_key`.
    pub key: Vec<u8>,
    /// `b`: the key arrived in base64, and `k` answers it so.
    pub binary_key: bool,
    /// Each flag's letter and token, in request order: answers echo `O`, `k`, … in it.
    pub flags: Vec<(u8, Vec<u8>)>,
    pub options: MetaOptions,
    /// The data block (`ms`).
    pub data: Vec<u8>,
}

impl Meta {
    /// The key as `k` and `me` answer it: base64 again when it came so.
    pub fn key_text(&self) -> Vec<u8> {
        if self.binary_key {
            BASE64.encode(&self.key).into_bytes()
        } else {
            self.key.clone()
        }
    }
}

fn refused(reply: &'static str, discard: usize) -> Request {
    Request::Refused {
        reply,
        noreply: false,
        discard,
    }
}

/// Decodes a meta command whose line is `command args` and ends at `next` in `buf`.
/// Errors are always answered (meta commands have no `noreply` for them); a refused
/// `ms` whose length was readable has its data block thrown away, as memcached does.
pub fn decode(
    command: &[u8],
    args: &[&[u8]],
    buf: &[u8],
    next: usize,
    max_value_bytes: usize,
) -> Result<Option<(Request, usize)>, Fatal> {
    let done = |request| Ok(Some((request, next)));
    let command = match command {
        b"mg" => MetaCommand::Get,
        b"ms" => MetaCommand::Set,
        b"md" => MetaCommand::Delete,
        b"ma" => MetaCommand::Arithmetic,
        b"me" => MetaCommand::Debug,
        b"mn" => MetaCommand::Noop,
        _ => return done(refused("ERROR", 0)),
    };
    if command == MetaCommand::Noop {
        let noop = meta(
            command,
            Vec::new(),
            false,
            Vec::new(),
            MetaOptions::default(),
        );
        return done(Request::Meta(noop));
    }
    let Some((&key, rest)) = args.split_first() else {
        return done(refused(
            if command == MetaCommand::Debug {
                BAD_FORMAT
            } else {
                "ERROR"
            },
            0,
        ));
    };
    if key.len() > MAX_KEY_TOKEN {
        return done(refused(BAD_FORMAT, 0));
    }
    if command == MetaCommand::Debug {
        // `me <key> [b]`: only a `b` right after the key means anything.
        let binary = rest.first().is_some_and(|t| *t == b"b");
        let key = if binary {
            match BASE64.decode(key) {
                Ok(k) if !k.is_empty() => k,
                _ => return done(refused(BAD_FORMAT, 0)),
            }
        } else if valid_key(key) {
            key.to_vec()
        } else {
            return done(refused(BAD_FORMAT, 0));
        };
        let debug = meta(command, key, binary, Vec::new(), MetaOptions::default());
        return done(Request::Meta(debug));
    }
    let (size, flag_tokens) = if command == MetaCommand::Set {
        let Some((&size, flags)) = rest.split_first() else {
            return done(refused(BAD_FORMAT, 0));
        };
        (Some(size), flags)
    } else {
        (None, rest)
    };
    if args.len() + 2 > MAX_TOKENS {
        return done(refused(
            if command == MetaCommand::Get {
                "CLIENT_ERROR options flags are too long"
            } else {
                "CLIENT_ERROR options flags too long"
            },
            0,
        ));
    }
    // ms: the data block's length first, so that any later error can swallow it.
    let size = match size {
        None => None,
        Some(token) => match parse_i32(token).filter(|n| *n <= i32::MAX - 2) {
            Some(n) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => return done(refused(BAD_FORMAT, 0)),
            },
            None => return done(refused(BAD_FORMAT, 0)),
        },
    };
    let discard = size.map_or(0, |n| n + 2);
    let parsed = parse_flags(command, key, flag_tokens);
    let (decoded, flags, options) = match parsed {
        Ok(parsed) => parsed,
        Err(reply) => {
            let reply = match command {
                // memcached answers md's and ma's flag errors in one string.
                MetaCommand::Delete | MetaCommand::Arithmetic => {
                    "CLIENT_ERROR invalid or duplicate flag"
                }
                _ => reply,
            };
            return done(refused(reply, discard));
        }
    };
    let binary_key = decoded.is_some();
    let key = match decoded {
        Some(key) => key,
        None if valid_key(key) => key.to_vec(),
        // A control character: as a classic command's key.
        None => return done(refused(BAD_FORMAT, discard)),
    };
    if let Some(reply) = check_mode(command, options.mode) {
        return done(refused(reply, discard));
    }
    let Some(size) = size else {
        return done(Request::Meta(meta(
            command, key, binary_key, flags, options,
        )));
    };
    if size > max_value_bytes {
        return done(refused("SERVER_ERROR object too large for cache", discard));
    }
    let end = next + size;
    let Some(block) = buf.get(next..end + 2) else {
        return Ok(None);
    };
    if &block[size..] != b"\r\n" {
        return Ok(Some((refused("CLIENT_ERROR bad data chunk", 0), end + 2)));
    }
    let request = Meta {
        data: block[..size].to_vec(),
        ..meta(command, key, binary_key, flags, options)
    };
    Ok(Some((Request::Meta(request), end + 2)))
}

fn meta(
    command: MetaCommand,
    key: Vec<u8>,
    binary_key: bool,
    flags: Vec<(u8, Vec<u8>)>,
    options: MetaOptions,
) -> Meta {
    Meta {
        command,
        key,
        binary_key,
        flags,
        options,
        data: Vec::new(),
    }
}

/// The base64-decoded key (with `b`), the flags in order, what they ask for.
type Parsed = (Option<Vec<u8>>, Vec<(u8, Vec<u8>)>, MetaOptions);

/// memcached's `_meta_flag_preparse`: a duplicate or unknown letter stops at once;
/// a bad token is noted and the rest still read (the last such error is answered).
fn parse_flags(command: MetaCommand, key: &[u8], tokens: &[&[u8]]) -> Result<Parsed, &'static str> {
    let mut seen = [false; 128];
    let mut options = MetaOptions::default();
    let mut flags = Vec::with_capacity(tokens.len());
    let mut error: Option<&'static str> = None;
    let mut decoded: Option<Vec<u8>> = None;
    for token in tokens {
        let letter = token[0];
        if letter >= 127 || seen[usize::from(letter)] {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen[usize::from(letter)] = true;
        if !KNOWN.contains(&letter) || unserved(command, letter) {
            return Err("CLIENT_ERROR invalid flag");
        }
        let rest = &token[1..];
        let bad_token = "CLIENT_ERROR bad token in command line format";
        match letter {
            b'b' => match BASE64.decode(key) {
                Ok(k) if !k.is_empty() => decoded = Some(k),
                _ => error = Some("CLIENT_ERROR error decoding key"),
            },
            b'N' => match parse_i32(rest) {
                Some(n) => options.vivify = Some(i64::from(n)),
                None => error = Some(bad_token),
            },
            b'T' => match parse_i32(rest) {
                Some(n) => options.ttl = Some(i64::from(n)),
                None => error = Some(bad_token),
            },
            b'C' => match parse_u64(rest) {
                Some(n) => options.compare_cas = Some(n),
                None => error = Some(bad_token),
            },
            b'F' => match parse_u64(rest).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => options.client_flags = n,
                None => error = Some(error.unwrap_or(BAD_FORMAT)),
            },
            b'M' => match rest {
                [mode] => options.mode = Some(*mode),
                _ => error = Some("CLIENT_ERROR incorrect length for M token"),
            },
            b'J' => match parse_u64(rest) {
                Some(n) => options.initial = n,
                None => error = Some("CLIENT_ERROR invalid numeric initial value"),
            },
            b'D' => match parse_u64(rest) {
                Some(n) => options.delta = n,
                None => error = Some("CLIENT_ERROR invalid numeric delta value"),
            },
            b'O' if token.len() > MAX_OPAQUE => {
                error = Some("CLIENT_ERROR opaque token too long");
            }
            b'q' => options.quiet = true,
            b'v' => options.value = true,
            b'x' => options.remove_value = true,
            _ => {}
        }
        flags.push((letter, token.to_vec()));
    }
    if let Some(error) = error {
        return Err(error);
    }
    Ok((decoded, flags, options))
}

fn check_mode(command: MetaCommand, mode: Option<u8>) -> Option<&'static str> {
    let mode = mode?;
    match command {
        MetaCommand::Set if !b"EAPRS".contains(&mode) => {
            Some("CLIENT_ERROR invalid mode for ms M token")
        }
        MetaCommand::Arithmetic if !b"I+D-".contains(&mode) => {
            Some("CLIENT_ERROR invalid mode for ma M token")
        }
        _ => None,
    }
}

/// memcached's `safe_strtol`: a whole token of digits, optionally signed, in 32 bits.
fn parse_i32(token: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(token).ok()?;
    let body = text.strip_prefix('-').unwrap_or(text);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// memcached's `safe_strtoull`: a whole token of digits in 64 bits.
fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Request {
        super::super::request::decode(bytes, 1 << 20)
            .expect("not fatal")
            .expect("complete")
            .0
    }

    fn reply(bytes: &[u8]) -> &'static str {
        match dec(bytes) {
            Request::Refused { reply, .. } => reply,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn flags_keep_their_order_and_tokens() {
        let Request::Meta(meta) = dec(b"mg k v Oab T30 k\r\n") else {
            panic!("not meta");
        };
        assert_eq!(meta.command, MetaCommand::Get);
        assert_eq!(meta.key, b"k");
        let letters: Vec<u8> = meta.flags.iter().map(|(l, _)| *l).collect();
        assert_eq!(letters, b"vOTk");
        assert_eq!(meta.options.ttl, Some(30));
        assert!(meta.options.value);
    }

    #[test]
    fn flag_errors_are_memcacheds() {
        assert_eq!(reply(b"mg k v v\r\n"), "CLIENT_ERROR duplicate flag");
        assert_eq!(reply(b"mg k !\r\n"), "CLIENT_ERROR invalid flag");
        assert_eq!(reply(b"mg k h\r\n"), "CLIENT_ERROR invalid flag");
        assert_eq!(
            reply(b"mg k Tx\r\n"),
            "CLIENT_ERROR bad token in command line format"
        );
        assert_eq!(reply(b"mg !!! b\r\n"), "CLIENT_ERROR error decoding key");
        assert_eq!(
            reply(b"md k v v\r\n"),
            "CLIENT_ERROR invalid or duplicate flag"
        );
        assert_eq!(
            reply(b"ma k MX\r\n"),
            "CLIENT_ERROR invalid mode for ma M token"
        );
        assert_eq!(reply(b"mg\r\n"), "ERROR");
        assert_eq!(reply(b"me\r\n"), BAD_FORMAT);
        assert_eq!(reply(b"ms k\r\n"), BAD_FORMAT);
        assert_eq!(reply(b"ms k -1\r\n"), BAD_FORMAT);
        assert_eq!(
            reply(b"md k\x01 q\r\n"),
            BAD_FORMAT,
            "a key, not a flag, error"
        );
    }

    #[test]
    fn a_refused_ms_swallows_its_data_block() {
        assert!(matches!(
            dec(b"ms k 3 MX\r\n"),
            Request::Refused {
                reply: "CLIENT_ERROR invalid mode for ms M token",
                discard: 5,
                ..
            }
        ));
        assert!(matches!(
            dec(b"ms k 2000000\r\n"),
            Request::Refused {
                reply: "SERVER_ERROR object too large for cache",
                discard: 2_000_002,
                ..
            }
        ));
    }

    #[test]
    fn base64_keys_are_decoded() {
        let Request::Meta(meta) = dec(b"ms Zm9v 2 b\r\nhi\r\n") else {
            panic!("not meta");
        };
        assert_eq!(meta.key, b"foo");
        assert!(meta.binary_key);
        assert_eq!(meta.data, b"hi");
        assert_eq!(meta.key_text(), b"Zm9v");
    }
}
