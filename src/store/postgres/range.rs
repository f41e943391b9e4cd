//! Key ranges as index range scans: bytea bounds for a prefix and a cursor.

use std::ops::Bound;

use crate::store::KeyRange;

/// The smallest key a scan may return, inclusive: the larger of the prefix and the
/// start bound (an exclusive start `s` becomes `s ++ [0]`, the next key after `s`).
pub fn scan_lower_bound(range: &KeyRange) -> Vec<u8> {
    let start = match &range.start {
        Bound::Unbounded => None,
        Bound::Included(start) => Some(start.clone()),
        Bound::Excluded(start) => {
            let mut next = start.clone();
            next.push(0);
            Some(next)
        }
    };
    match start {
        Some(start) if start > range.prefix => start,
        _ => range.prefix.clone(),
    }
}

/// The smallest key greater than every key that starts with `prefix`: drop trailing
/// 0xFF bytes and increment the last remaining one. `None` when there is no such key
/// (an empty prefix, or one of only 0xFF bytes): the scan runs to the end.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut upper = prefix[..=keep].to_vec();
    upper[keep] += 1;
    Some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_skips_trailing_ff_bytes() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[0x61, 0xFF]), Some(vec![0x62]));
        assert_eq!(prefix_successor(&[0x00]), Some(vec![0x01]));
    }

    #[test]
    fn scan_lower_bound_is_the_later_of_prefix_and_start() {
        let range = |start, prefix: &[u8]| KeyRange {
            start,
            prefix: prefix.to_vec(),
        };
        assert_eq!(scan_lower_bound(&range(Bound::Unbounded, b"p")), b"p");
        assert_eq!(
            scan_lower_bound(&range(Bound::Excluded(b"pq".to_vec()), b"p")),
            b"pq\0"
        );
        assert_eq!(
            scan_lower_bound(&range(Bound::Included(b"pq".to_vec()), b"p")),
            b"pq"
        );
        assert_eq!(
            scan_lower_bound(&range(Bound::Excluded(b"a".to_vec()), b"p")),
            b"p"
        );
    }
}
