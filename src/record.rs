//! What the store keeps per key, independent of how it is encoded on disk.

/// Content type recorded for values written without one (e.g. over the Tyrant port).
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// One stored key: the timestamp of the write that produced it, and either a live
/// value or a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Client timestamp (microseconds since the Unix epoch) of the last applied write.
    pub timestamp: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Live {
        value: Vec<u8>,
        content_type: String,
        /// Server time (µs) after which the value reads as absent.
        expires_at: Option<u64>,
    },
    /// A delete; kept so that an older write arriving late cannot resurrect the key.
    Tombstone {
        /// Server time (µs) the delete was applied; the grace period counts from here.
        deleted_at: u64,
    },
}

impl Record {
    pub fn live(
        timestamp: u64,
        value: Vec<u8>,
        content_type: String,
        expires_at: Option<u64>,
    ) -> Self {
        Self {
            timestamp,
            state: State::Live {
                value,
                content_type,
                expires_at,
            },
        }
    }

    pub fn tombstone(timestamp: u64, deleted_at: u64) -> Self {
        Self {
            timestamp,
            state: State::Tombstone { deleted_at },
        }
    }

    /// The value, if this record reads as present at `now`.
    pub fn live_value(&self, now: u64) -> Option<&[u8]> {
        match &self.state {
            State::Live {
                value, expires_at, ..
            } if expires_at.is_none_or(|at| now < at) => Some(value),
            _ => None,
        }
    }

    pub fn is_live(&self, now: u64) -> bool {
        self.live_value(now).is_some()
    }

    /// Until when (server µs, exclusive) this record's timestamp still guards the key;
    /// `None` means forever (a live value without expiry).
    pub fn guards_until(&self, grace_micros: u64) -> Option<u64> {
        match self.state {
            State::Live { expires_at, .. } => expires_at.map(|at| at.saturating_add(grace_micros)),
            State::Tombstone { deleted_at } => Some(deleted_at.saturating_add(grace_micros)),
        }
    }
}
