//! Field-level last-write-wins for JSON-object documents.
//!
//! Every top-level field has a timestamp — its entry in the clocks, or the document's
//! *base*, the timestamp of its last whole-value write (PUT or DELETE). Each write
//! wins field by field:
//!
//! * a PATCH at T sets (or, with `null`, removes) each field it names whose timestamp
//!   is older than T; older or equal-but-different fields refuse it;
//! * a PUT or DELETE at T not older than the base makes T the base: every field older
//!   than T takes the PUT's member (or goes), while a field a newer PATCH wrote — or
//!   removed — keeps what that PATCH said.
//!
//! So each field ends as the newest write that named it (a PUT or DELETE names every
//! field) says, whatever the order the writes arrived in: the same set of writes
//! always ends in the same document. A removed field keeps the timestamp of what
//! removed it, so an older PATCH cannot bring it back.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::write::{DOCUMENT_CONTENT_TYPE, PatchReport, is_json};
use crate::record::{FieldClock, FieldClocks, Meta, Record, State};

/// A JSON object parsed from `value`, if it is one.
pub fn object(value: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(value) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// A document with its clocks, as the rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    base: u64,
    base_deleted: bool,
    content_type: String,
    /// The fields present now.
    fields: Map<String, Value>,
    /// Fields written or removed after `base` (each timestamp newer than it).
    clocks: BTreeMap<String, FieldClock>,
}

/// What a whole-value write does to a document with clocks.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Merged(Document),
    Repeat,
    Stale,
    Tie,
}

impl Document {
    /// The live JSON-object document `record` holds, if it is one.
    pub fn of(record: &Record) -> Option<Self> {
        let State::Live {
            value,
            content_type,
            ..
        } = &record.state
        else {
            return None;
        };
        if !is_json(content_type) {
            return None;
        }
        let fields = object(value)?;
        let (base, base_deleted, clocks) = match &record.meta.fields {
            Some(f) => (f.base, f.base_deleted, f.clocks.clone()),
            None => (record.timestamp, false, BTreeMap::new()),
        };
        Some(Self {
            base,
            base_deleted,
            content_type: content_type.clone(),
            fields,
            clocks,
        })
    }

    /// [`Document::of`], only for a document some of whose fields are newer than its
    /// base: any other record follows the whole-value rule unchanged.
    pub fn tracked(record: &Record) -> Option<Self> {
        record.meta.fields.as_ref()?;
        Self::of(record)
    }

    /// No document, guarded up to `base` (a delete's timestamp, or 0 for nothing).
    pub fn empty(base: u64) -> Self {
        Self {
            base,
            base_deleted: true,
            content_type: DOCUMENT_CONTENT_TYPE.to_string(),
            fields: Map::new(),
            clocks: BTreeMap::new(),
        }
    }

    /// The newest timestamp of anything in the document.
    pub fn newest(&self) -> u64 {
        self.clocks
            .values()
            .map(|c| c.timestamp)
            .fold(self.base, u64::max)
    }

    /// The timestamp of field `name`.
    fn stamp(&self, name: &str) -> u64 {
        self.clocks.get(name).map_or(self.base, |c| c.timestamp)
    }

    /// No field and no clock: nothing left to keep.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.clocks.is_empty()
    }

    /// A whole-value PUT at `t` of `incoming` (`None`: not a JSON object).
    pub fn put(
        &self,
        t: u64,
        incoming: Option<&Map<String, Value>>,
        content_type: &str,
    ) -> Outcome {
        if t < self.base {
            return Outcome::Stale;
        }
        let Some(incoming) = incoming else {
            // Not an object: it cannot keep the newer fields, so it cannot apply.
            return if t == self.base {
                Outcome::Tie
            } else {
                Outcome::Stale
            };
        };
        // Every field stamped `t` must agree with the PUT: a repeat of the base write,
        // or a PATCH at the same timestamp that said the same.
        let agrees = self
            .names(incoming)
            .into_iter()
            .filter(|name| self.stamp(name) == t)
            .all(|name| self.fields.get(name) == incoming.get(name));
        if t == self.base {
            return if !self.base_deleted && agrees && content_type == self.content_type {
                Outcome::Repeat
            } else {
                Outcome::Tie
            };
        }
        if !agrees {
            return Outcome::Tie;
        }
        let mut next = self.after(t, false);
        for (name, value) in incoming {
            if self.stamp(name) <= t {
                next.fields.insert(name.clone(), value.clone());
            }
        }
        next.content_type = content_type.to_string();
        Outcome::Merged(next)
    }

    /// A DELETE at `t`.
    pub fn delete(&self, t: u64) -> Outcome {
        if t < self.base {
            return Outcome::Stale;
        }
        if t == self.base {
            return if self.base_deleted {
                Outcome::Repeat
            } else {
                Outcome::Tie
            };
        }
        // A field a PATCH set at `t` collides with a delete at `t`.
        if self.fields.keys().any(|name| self.stamp(name) == t) {
            return Outcome::Tie;
        }
        Outcome::Merged(self.after(t, true))
    }

    /// A PATCH at `t`: each member sets its field, `null` removes it.
    pub fn patch(mut self, t: u64, members: &Map<String, Value>) -> (Self, PatchReport) {
        let mut report = PatchReport::default();
        for (name, value) in members {
            let stamp = self.stamp(name);
            let wanted = (!value.is_null()).then_some(value);
            if t > stamp {
                match wanted {
                    Some(value) => {
                        self.fields.insert(name.clone(), value.clone());
                    }
                    None => {
                        self.fields.remove(name);
                    }
                }
                self.clocks.insert(
                    name.clone(),
                    FieldClock {
                        timestamp: t,
                        removed: wanted.is_none(),
                    },
                );
                report.applied.push(name.clone());
            } else if t == stamp && self.fields.get(name) == wanted {
                report.unchanged.push(name.clone());
            } else {
                report.refused.push((name.clone(), stamp));
            }
        }
        (self, report)
    }

    /// What survives a whole-value write at `t`: the base moves to `t`, and only the
    /// fields (and removals) newer than it stay.
    fn after(&self, t: u64, deleted: bool) -> Self {
        let clocks: BTreeMap<String, FieldClock> = self
            .clocks
            .iter()
            .filter(|(_, c)| c.timestamp > t)
            .map(|(n, c)| (n.clone(), *c))
            .collect();
        let fields = self
            .fields
            .iter()
            .filter(|(name, _)| clocks.contains_key(name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Self {
            base: t,
            base_deleted: deleted,
            content_type: self.content_type.clone(),
            fields,
            clocks,
        }
    }

    /// Every field name the document or `incoming` mentions.
    fn names<'a>(&'a self, incoming: &'a Map<String, Value>) -> Vec<&'a str> {
        let mut names: Vec<&str> = self
            .fields
            .keys()
            .chain(self.clocks.keys())
            .chain(incoming.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The record holding this document: its fields as a JSON object (keys in byte
    /// order), its newest timestamp, and its clocks when any field is newer than the base.
    pub fn into_record(self, expires_at: Option<u64>, mut meta: Meta) -> Record {
        let timestamp = self.newest();
        let base = self.base;
        let clocks: BTreeMap<String, FieldClock> = self
            .clocks
            .into_iter()
            .filter(|(_, c)| c.timestamp > base)
            .collect();
        meta.fields = (!clocks.is_empty()).then_some(FieldClocks {
            base,
            base_deleted: self.base_deleted,
            clocks,
        });
        let value = serde_json::to_vec(&Value::Object(self.fields)).unwrap_or_default();
        Record {
            timestamp,
            state: State::Live {
                value,
                content_type: self.content_type,
                expires_at,
            },
            meta,
        }
    }
}
