//! THE rule: given what is stored and what arrives, decide whether a write applies.
//!
//! Every write path — HTTP PUT/DELETE, Tyrant `tsput`/`tsout`, Tyrant plain writes
//! under `--tyrant-guard prefix` — asks [`decide`] inside the same write transaction
//! that applies the result, so the decision and the change are atomic.
//!
//! * incoming > stored: apply.
//! * incoming < stored: stale, nothing changes.
//! * incoming == stored: the same write again (same value and content type, or a
//!   repeated delete) is an idempotent success; anything else is a tie, refused.
//! * A stored record stops guarding once it has been gone (deleted or expired) for
//!   longer than the tombstone grace period; after that the key is treated as absent.

pub mod document;
mod write;

pub use write::{
    Change, Condition, EtagMatch, GuardClock, Guarded, GuardedWrite, OwnerChange, PatchReport,
    Resolved, SessionWrite, cap, is_json, resolve, session_meta,
};

use crate::record::{Record, State};

/// What a client asks to do to a key.
#[derive(Debug, Clone, Copy)]
pub enum Intent<'a> {
    Put {
        value: &'a [u8],
        content_type: &'a str,
    },
    Delete,
}

impl<'a> Intent<'a> {
    /// What writing `record` asks for: a put of its value, or a delete.
    pub fn of(record: &'a Record) -> Self {
        match &record.state {
            State::Live {
                value,
                content_type,
                ..
            } => Intent::Put {
                value,
                content_type,
            },
            State::Tombstone { .. } => Intent::Delete,
        }
    }
}

/// The outcome of comparing an incoming write with the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than anything that guards the key: write it.
    Apply,
    /// Exactly the write already stored: succeed without changing anything.
    Repeat,
    /// Older than the stored timestamp.
    Stale { current: u64 },
    /// Same timestamp, different content: two writers collided.
    Tie { current: u64 },
}

/// Decide what an incoming write with `timestamp` does to `stored`.
///
/// `now` and `grace_micros` are server time; they only matter for records that have
/// been deleted or expired, whose guard lapses after the grace period.
pub fn decide(
    stored: Option<&Record>,
    timestamp: u64,
    intent: Intent<'_>,
    now: u64,
    grace_micros: u64,
) -> Verdict {
    let Some(stored) = stored.filter(|r| still_guards(r, now, grace_micros)) else {
        return Verdict::Apply;
    };
    let current = stored.timestamp;
    if timestamp > current {
        return Verdict::Apply;
    }
    if timestamp < current {
        return Verdict::Stale { current };
    }
    let same = match (intent, &stored.state) {
        (Intent::Delete, State::Tombstone { .. }) => true,
        (
            Intent::Put {
                value,
                content_type,
            },
            State::Live {
                value: stored_value,
                content_type: stored_type,
                ..
            },
        ) => value == stored_value.as_slice() && content_type == stored_type,
        _ => false,
    };
    if same {
        Verdict::Repeat
    } else {
        Verdict::Tie { current }
    }
}

/// Whether `record`'s timestamp still protects its key at server time `now`.
pub fn still_guards(record: &Record, now: u64, grace_micros: u64) -> bool {
    record
        .guards_until(grace_micros)
        .is_none_or(|until| now < until)
}

/// A timestamp too far ahead of the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutureTimestamp {
    pub timestamp: u64,
    pub server_now: u64,
    pub max_future_skew_micros: u64,
}

/// Refuse timestamps more than `max_future_skew_micros` ahead of `now`; 0 disables the check.
///
/// Without it, one client with a clock set years ahead would lock a key against every
/// correctly-clocked writer until that future arrives.
pub fn check_skew(
    timestamp: u64,
    now: u64,
    max_future_skew_micros: u64,
) -> Result<(), FutureTimestamp> {
    if max_future_skew_micros == 0 || timestamp <= now.saturating_add(max_future_skew_micros) {
        Ok(())
    } else {
        Err(FutureTimestamp {
            timestamp,
            server_now: now,
            max_future_skew_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 3_600_000_000;

    fn put(value: &[u8]) -> Intent<'_> {
        Intent::Put {
            value,
            content_type: "text/plain",
        }
    }

    fn live(ts: u64, value: &[u8]) -> Record {
        Record::live(ts, value.to_vec(), "text/plain".into(), None)
    }

    #[test]
    fn absent_key_accepts_any_timestamp() {
        assert_eq!(decide(None, 0, put(b"a"), 10, GRACE), Verdict::Apply);
    }

    #[test]
    fn newer_applies_older_is_stale() {
        let r = live(100, b"a");
        assert_eq!(decide(Some(&r), 101, put(b"b"), 0, GRACE), Verdict::Apply);
        assert_eq!(
            decide(Some(&r), 99, put(b"b"), 0, GRACE),
            Verdict::Stale { current: 100 }
        );
        assert_eq!(
            decide(Some(&r), 99, Intent::Delete, 0, GRACE),
            Verdict::Stale { current: 100 }
        );
    }

    #[test]
    fn equal_timestamp_is_repeat_only_for_identical_write() {
        let r = live(100, b"a");
        assert_eq!(decide(Some(&r), 100, put(b"a"), 0, GRACE), Verdict::Repeat);
        assert_eq!(
            decide(Some(&r), 100, put(b"b"), 0, GRACE),
            Verdict::Tie { current: 100 }
        );
        let other_type = Intent::Put {
            value: b"a",
            content_type: "application/json",
        };
        assert_eq!(
            decide(Some(&r), 100, other_type, 0, GRACE),
            Verdict::Tie { current: 100 }
        );
        assert_eq!(
            decide(Some(&r), 100, Intent::Delete, 0, GRACE),
            Verdict::Tie { current: 100 }
        );
        let t = Record::tombstone(100, 5);
        assert_eq!(
            decide(Some(&t), 100, Intent::Delete, 5, GRACE),
            Verdict::Repeat
        );
        assert_eq!(
            decide(Some(&t), 100, put(b"a"), 5, GRACE),
            Verdict::Tie { current: 100 }
        );
    }

    #[test]
    fn tombstone_guards_until_grace_has_passed() {
        let t = Record::tombstone(100, 1_000);
        assert_eq!(
            decide(Some(&t), 50, put(b"a"), 1_000 + GRACE - 1, GRACE),
            Verdict::Stale { current: 100 }
        );
        assert_eq!(
            decide(Some(&t), 50, put(b"a"), 1_000 + GRACE, GRACE),
            Verdict::Apply
        );
    }

    #[test]
    fn expired_record_guards_until_grace_has_passed() {
        let r = Record::live(100, b"a".to_vec(), "text/plain".into(), Some(1_000));
        assert!(!r.is_live(1_000));
        assert_eq!(
            decide(Some(&r), 50, put(b"a"), 1_000 + GRACE - 1, GRACE),
            Verdict::Stale { current: 100 }
        );
        assert_eq!(
            decide(Some(&r), 50, put(b"a"), 1_000 + GRACE, GRACE),
            Verdict::Apply
        );
    }

    #[test]
    fn skew_guard_refuses_far_future_and_can_be_disabled() {
        assert!(check_skew(1_060, 1_000, 60).is_ok());
        assert!(check_skew(1_061, 1_000, 60).is_err());
        assert!(check_skew(u64::MAX, 1_000, 0).is_ok());
        assert!(check_skew(u64::MAX, u64::MAX - 1, 60).is_ok());
    }
}
