//! Reply writers for the server (`docs/tyrant-protocol.md`, "Replies"). All
//! integers are big-endian.
//!
//! These only lay out bytes; choosing between success and failure (e.g.
//! ttserver answers `01` for an adddouble NaN result, `00 00000000` for a
//! masked misc) is the caller's job.

use super::wire::{double_to_wire, wire_len};

/// `00` or `01`: the whole reply of status-only commands, and the
/// failure reply of every command except misc (see [`misc_failure`]).
pub fn status(out: &mut Vec<u8>, ok: bool) {
    out.push(if ok { 0 } else { 1 });
}

/// `00 len:u32 bytes`: get, iternext, ext success and stat.
pub fn blob(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(0);
    out.extend_from_slice(&wire_len(bytes.len()));
    out.extend_from_slice(bytes);
}

/// `00 len:u32 digits`: `n` as decimal text (ext's answer, the timestamp now in
/// force), written without an intermediate `String`.
pub fn decimal(out: &mut Vec<u8>, n: u64) {
    blob(out, itoa::Buffer::new().format(n).as_bytes());
}

/// `00 n:u32`: vsiz.
pub fn u32_ok(out: &mut Vec<u8>, n: u32) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

/// `00 n:i32`: addint.
pub fn i32_ok(out: &mut Vec<u8>, n: i32) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

/// `00 n:u64`: rnum and size.
pub fn u64_ok(out: &mut Vec<u8>, n: u64) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

/// `00 integ:i64 fract:i64`: adddouble, via [`double_to_wire`].
pub fn double_ok(out: &mut Vec<u8>, x: f64) {
    let (integ, fract) = double_to_wire(x);
    out.push(0);
    out.extend_from_slice(&integ.to_be_bytes());
    out.extend_from_slice(&fract.to_be_bytes());
}

/// mget: `00 n:u32 {ksiz:u32 vsiz:u32 key value}×n`. Note both lengths
/// come before both byte strings.
pub fn kv_list<K, V>(out: &mut Vec<u8>, items: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    out.push(0);
    counted(out, items, |out, (key, value)| {
        let (key, value) = (key.as_ref(), value.as_ref());
        out.extend_from_slice(&wire_len(key.len()));
        out.extend_from_slice(&wire_len(value.len()));
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    });
}

/// fwmkeys and misc success: `00 n:u32 {siz:u32 bytes}×n`.
pub fn list<B: AsRef<[u8]>>(out: &mut Vec<u8>, items: impl IntoIterator<Item = B>) {
    out.push(0);
    counted(out, items, |out, item| {
        let item = item.as_ref();
        out.extend_from_slice(&wire_len(item.len()));
        out.extend_from_slice(item);
    });
}

/// misc failure: `01 00000000`. The C client always reads the count,
/// so a bare `01` would leave it waiting.
pub fn misc_failure(out: &mut Vec<u8>) {
    out.extend_from_slice(&[1, 0, 0, 0, 0]);
}

/// repl's opening: the master's server id, with no status byte.
pub fn server_id(out: &mut Vec<u8>, id: u32) {
    out.extend_from_slice(&id.to_be_bytes());
}

/// Writes a count placeholder, the items, then patches the count, so
/// callers can stream items from an iterator of unknown length.
fn counted<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut n: usize = 0;
    for item in items {
        write(out, item);
        n += 1;
    }
    out[at..at + 4].copy_from_slice(&wire_len(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_is_the_blob_of_the_number_as_text() {
        for n in [0, 7, 10, 99, 1_767_225_600_000_000, u64::MAX] {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            decimal(&mut got, n);
            blob(&mut want, n.to_string().as_bytes());
            assert_eq!(got, want, "{n}");
        }
    }
}
