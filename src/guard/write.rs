//! A guarded write as the seam carries it, and [`resolve`]: what it does to the stored
//! record. Both engines run it — the embedded one under its write lock, the SQL one
//! inside a transaction holding the row lock — so the answer and the record it writes
//! come from this one function on either.
//!
//! Order of the checks: a precondition (`If-Match`, `If-None-Match: *`, Tyrant
//! `putkeep`) first, then the timestamp rule ([`super::decide`] for whole values,
//! [`super::document`] for JSON-object documents with field clocks), then the limits
//! of the result.

use serde_json::{Map, Value};

use super::document::{self, Document};
use super::{Intent, Verdict, decide, still_guards};
use crate::record::{Meta, Record, State};

/// One write to one key, with the client's timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardedWrite {
    pub key: Vec<u8>,
    /// The client's timestamp (µs since the Unix epoch).
    pub timestamp: u64,
    pub change: Change,
    pub condition: Condition,
    pub session: SessionWrite,
}

impl GuardedWrite {
    /// A whole-value write of `record` (a live value is a put, a tombstone a delete)
    /// with no precondition and no session metadata.
    pub fn whole(key: Vec<u8>, record: Record) -> Self {
        let timestamp = record.timestamp;
        let change = match record.state {
            State::Live {
                value,
                content_type,
                expires_at,
            } => Change::Put {
                value,
                content_type,
                expires_at,
            },
            State::Tombstone { .. } => Change::Delete,
        };
        Self {
            key,
            timestamp,
            change,
            condition: Condition::Always,
            session: SessionWrite::default(),
        }
    }
}

/// What the write does to the value.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A whole value (HTTP PUT, Tyrant `tsput`). `expires_at` is the requested expiry,
    /// before the absolute lifetime caps it.
    Put {
        value: Vec<u8>,
        content_type: String,
        expires_at: Option<u64>,
    },
    /// Field-level changes to a JSON-object document (HTTP PATCH): each member sets
    /// that top-level field, `null` removes it. `expires_at`, when given, replaces the
    /// expiry; the merged document may be at most `max_bytes` long.
    Patch {
        members: Map<String, Value>,
        expires_at: Option<u64>,
        max_bytes: usize,
    },
    /// A delete: a tombstone, or — when a PATCH wrote fields newer than it — a document
    /// of just those fields.
    Delete,
    /// A record as exported (`tidemark import`): judged by the whole-value rule and
    /// stored as it is, metadata included.
    Restore(Record),
}

/// What must hold of the stored value, besides the timestamp rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// No live value (Tyrant `putkeep`, HTTP `If-None-Match: *`).
    IfAbsent,
    /// A live value whose ETag is one of these (`If-Match`).
    IfMatch(EtagMatch),
    /// No live value whose ETag is one of these (`If-None-Match` with entity tags).
    IfNoneMatch(EtagMatch),
    /// Both, evaluated in that order (RFC 9110 §13.2.2).
    IfMatchAndNoneMatch(EtagMatch, EtagMatch),
}

/// The ETags an `If-Match` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`: any live value.
    Any,
    /// Entity tags as sent, quotes included; weak tags (`W/"…"`) never match.
    Tags(Vec<String>),
}

impl EtagMatch {
    /// Strong comparison (`If-Match`): `etag` is one of the tags, weak ones never.
    fn accepts(&self, etag: &str) -> bool {
        match self {
            EtagMatch::Any => true,
            EtagMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }

    /// Weak comparison (`If-None-Match`, RFC 9110 §13.1.2): `W/"x"` names `"x"` too.
    pub fn names(&self, etag: &str) -> bool {
        match self {
            EtagMatch::Any => true,
            EtagMatch::Tags(tags) => tags
                .iter()
                .any(|t| t.strip_prefix("W/").unwrap_or(t) == etag),
        }
    }
}

/// The session metadata a write asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionWrite {
    pub owner: OwnerChange,
    /// Absolute lifetime (µs) for a key this write creates; ignored otherwise.
    pub lifetime_micros: Option<u64>,
    /// memcached client flags of the value written ([`Meta::flags`]); 0 elsewhere.
    pub flags: u32,
}

/// `X-Session-Owner`: absent keeps the owner, a value sets it, empty clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OwnerChange {
    #[default]
    Keep,
    Set(String),
    Clear,
}

/// Server time and grace period a guarded write is judged at (see [`crate::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardClock {
    pub now: u64,
    pub grace_micros: u64,
}

/// What a guarded write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Written; `was_live` tells whether a live value was replaced.
    Applied { was_live: bool },
    /// A whole-value write merged with fields a newer PATCH wrote, which it kept: the
    /// stored document is not the write's value alone (its ETag is not the write's).
    Merged { was_live: bool },
    /// The identical write was already stored at this timestamp; nothing changed.
    Repeated,
    /// Older than what guards the key; nothing changed. `current` is the stored
    /// record's newest timestamp.
    Stale { current: u64 },
    /// Same timestamp as the stored record, different content; nothing changed.
    Tie { current: u64 },
    /// `IfAbsent` and a live value is stored; nothing changed.
    Exists,
    /// `IfMatch` and the stored value's ETag (`None`: no live value) is not one of
    /// those asked for; nothing changed.
    PreconditionFailed { current_etag: Option<String> },
    /// A PATCH: what happened to each field. Something was written when
    /// [`PatchReport::applied`] is not empty.
    Patched(PatchReport),
    /// A PATCH whose every field was refused (older or a tie); nothing changed.
    PatchRefused(PatchReport),
    /// A PATCH onto a stored value that is not a JSON object; nothing changed.
    NotAnObject,
    /// A PATCH whose merged document would be `len` bytes, over its limit.
    TooLarge { len: usize },
    /// The stored record cannot be decoded; nothing changed. Only in the answers of
    /// a batch: a single write answers `StoreError::Corrupt` instead.
    Corrupt,
}

/// Field by field, what a PATCH did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchReport {
    /// The document did not exist (no live value) before.
    pub created: bool,
    pub applied: Vec<String>,
    /// Identical to what was stored at the same timestamp: a repeat.
    pub unchanged: Vec<String>,
    /// Older than the field's timestamp, or a tie with it: (field, its timestamp).
    pub refused: Vec<(String, u64)>,
    /// The document's newest timestamp afterwards.
    pub timestamp: u64,
    /// The document's ETag afterwards (`None` when nothing is stored).
    pub etag: Option<String>,
}

/// A write's answer and the record to store (`None`: leave the key as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub answer: Guarded,
    pub record: Option<Record>,
}

impl Resolved {
    fn refuse(answer: Guarded) -> Self {
        Self {
            answer,
            record: None,
        }
    }
}

/// Whether a media type is JSON (`application/json` or any `+json` type).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decide what `write` does to `stored` at `clock`, and compute the record to store.
pub fn resolve(stored: Option<&Record>, write: &GuardedWrite, clock: GuardClock) -> Resolved {
    let now = clock.now;
    // A record whose guard lapsed is as good as absent.
    let stored = stored.filter(|r| still_guards(r, now, clock.grace_micros));
    let live = stored.filter(|r| r.is_live(now));
    match &write.condition {
        Condition::Always => {}
        Condition::IfAbsent if live.is_some() => return Resolved::refuse(Guarded::Exists),
        Condition::IfAbsent => {}
        Condition::IfMatch(wanted) => {
            if let Some(refused) = if_match(live, wanted) {
                return refused;
            }
        }
        Condition::IfNoneMatch(unwanted) => {
            if let Some(refused) = if_none_match(live, unwanted) {
                return refused;
            }
        }
        Condition::IfMatchAndNoneMatch(wanted, unwanted) => {
            if let Some(refused) = if_match(live, wanted).or_else(|| if_none_match(live, unwanted))
            {
                return refused;
            }
        }
    }
    let was_live = live.is_some();
    match &write.change {
        Change::Restore(record) => {
            let verdict = decide(
                stored,
                record.timestamp,
                Intent::of(record),
                now,
                clock.grace_micros,
            );
            whole_value(verdict, was_live, || record.clone())
        }
        Change::Put {
            value,
            content_type,
            expires_at,
        } => {
            let meta = session_meta(live, &write.session, now);
            let capped = cap(*expires_at, meta.lifetime_ends);
            let fresh = || Record {
                timestamp: write.timestamp,
                state: State::Live {
                    value: value.clone(),
                    content_type: content_type.clone(),
                    expires_at: capped,
                },
                meta: meta.clone(),
            };
            match live.and_then(Document::tracked) {
                Some(doc) if write.timestamp <= doc.newest() => {
                    let incoming = is_json(content_type)
                        .then(|| document::object(value))
                        .flatten();
                    match doc.put(write.timestamp, incoming.as_ref(), content_type) {
                        document::Outcome::Merged(doc) => {
                            let record = doc.into_record(capped, meta.clone());
                            Resolved {
                                answer: Guarded::Merged { was_live },
                                record: Some(record),
                            }
                        }
                        refusal => Resolved::refuse(refused(refusal, doc.newest())),
                    }
                }
                _ => {
                    let intent = Intent::Put {
                        value,
                        content_type,
                    };
                    let verdict = decide(stored, write.timestamp, intent, now, clock.grace_micros);
                    whole_value(verdict, was_live, fresh)
                }
            }
        }
        Change::Delete => match live.and_then(Document::tracked) {
            Some(doc) if write.timestamp <= doc.newest() => match doc.delete(write.timestamp) {
                // Nothing newer than the delete: a plain delete.
                document::Outcome::Merged(doc) if doc.is_empty() => Resolved {
                    answer: Guarded::Applied { was_live },
                    record: Some(Record::tombstone(write.timestamp, now)),
                },
                document::Outcome::Merged(doc) => {
                    let expires_at = live.and_then(expiry_of);
                    let meta = live.map(|r| r.meta.clone()).unwrap_or_default();
                    Resolved {
                        answer: Guarded::Merged { was_live },
                        record: Some(doc.into_record(expires_at, meta)),
                    }
                }
                refusal => Resolved::refuse(refused(refusal, doc.newest())),
            },
            _ => {
                let verdict = decide(
                    stored,
                    write.timestamp,
                    Intent::Delete,
                    now,
                    clock.grace_micros,
                );
                whole_value(verdict, was_live, || {
                    Record::tombstone(write.timestamp, now)
                })
            }
        },
        Change::Patch {
            members,
            expires_at,
            max_bytes,
        } => patch(stored, live, write, members, *expires_at, *max_bytes, now),
    }
}

/// The refusal of an `If-Match` the live value (if any) does not meet.
fn if_match(live: Option<&Record>, wanted: &EtagMatch) -> Option<Resolved> {
    let current = live.map(Record::etag);
    (!current.as_deref().is_some_and(|etag| wanted.accepts(etag))).then(|| {
        Resolved::refuse(Guarded::PreconditionFailed {
            current_etag: current,
        })
    })
}

/// The refusal of an `If-None-Match` the live value matches.
fn if_none_match(live: Option<&Record>, unwanted: &EtagMatch) -> Option<Resolved> {
    let current = live.map(Record::etag)?;
    unwanted.names(&current).then(|| {
        Resolved::refuse(Guarded::PreconditionFailed {
            current_etag: Some(current),
        })
    })
}

/// A whole-value write a document refused, answered with its newest timestamp.
fn refused(outcome: document::Outcome, newest: u64) -> Guarded {
    match outcome {
        document::Outcome::Repeat => Guarded::Repeated,
        document::Outcome::Tie => Guarded::Tie { current: newest },
        document::Outcome::Stale | document::Outcome::Merged(_) => {
            Guarded::Stale { current: newest }
        }
    }
}

/// The answer of a whole-value write judged by [`decide`]: `make` builds the record
/// only when it applies.
fn whole_value(verdict: Verdict, was_live: bool, make: impl FnOnce() -> Record) -> Resolved {
    match verdict {
        Verdict::Apply => Resolved {
            answer: Guarded::Applied { was_live },
            record: Some(make()),
        },
        Verdict::Repeat => Resolved::refuse(Guarded::Repeated),
        Verdict::Stale { current } => Resolved::refuse(Guarded::Stale { current }),
        Verdict::Tie { current } => Resolved::refuse(Guarded::Tie { current }),
    }
}

fn patch(
    stored: Option<&Record>,
    live: Option<&Record>,
    write: &GuardedWrite,
    members: &Map<String, Value>,
    expires_at: Option<u64>,
    max_bytes: usize,
    now: u64,
) -> Resolved {
    // The document the patch applies to: the live one, or an empty one whose fields
    // date from whatever guards the key (a delete, an expired value, or nothing: 0).
    let doc = match live {
        Some(record) => match Document::of(record) {
            Some(doc) => doc,
            None => return Resolved::refuse(Guarded::NotAnObject),
        },
        None => Document::empty(stored.map_or(0, |r| r.timestamp)),
    };
    let (doc, mut report) = doc.patch(write.timestamp, members);
    if report.applied.is_empty() {
        report.timestamp = live.map_or(0, |r| r.timestamp);
        report.etag = live.map(Record::etag);
        return Resolved::refuse(if report.unchanged.is_empty() {
            Guarded::PatchRefused(report)
        } else {
            Guarded::Patched(report)
        });
    }
    let meta = session_meta(live, &write.session, now);
    let expiry = match expires_at {
        Some(at) => Some(at),
        None => live.and_then(expiry_of),
    };
    let record = doc.into_record(cap(expiry, meta.lifetime_ends), meta);
    if let State::Live { value, .. } = &record.state
        && value.len() > max_bytes
    {
        return Resolved::refuse(Guarded::TooLarge { len: value.len() });
    }
    report.created = live.is_none();
    report.timestamp = record.timestamp;
    report.etag = Some(record.etag());
    Resolved {
        answer: Guarded::Patched(report),
        record: Some(record),
    }
}

/// A live record's expiry.
fn expiry_of(record: &Record) -> Option<u64> {
    match record.state {
        State::Live { expires_at, .. } => expires_at,
        State::Tombstone { .. } => None,
    }
}

/// The expiry in force: the one asked for, but never past the lifetime's end (and a
/// capped value always expires).
pub fn cap(expires_at: Option<u64>, lifetime_ends: Option<u64>) -> Option<u64> {
    match (expires_at, lifetime_ends) {
        (Some(at), Some(end)) => Some(at.min(end)),
        (None, end) => end,
        (at, None) => at,
    }
}

/// The metadata a write leaves: owner, creation and lifetime carry over from a live
/// value; a write that creates the key starts them afresh.
pub fn session_meta(live: Option<&Record>, session: &SessionWrite, now: u64) -> Meta {
    let (owner, created_at, lifetime_ends) = match live {
        Some(r) => (
            r.meta.owner.clone(),
            r.meta.created_at,
            r.meta.lifetime_ends,
        ),
        None => (
            None,
            Some(now),
            session.lifetime_micros.map(|l| now.saturating_add(l)),
        ),
    };
    Meta {
        owner: match &session.owner {
            OwnerChange::Keep => owner,
            OwnerChange::Set(owner) => Some(owner.clone()),
            OwnerChange::Clear => None,
        },
        created_at,
        lifetime_ends,
        fields: None,
        flags: session.flags,
    }
}

/// The content type of a document PATCH creates.
pub const DOCUMENT_CONTENT_TYPE: &str = "application/json";
