//! Header names of the HTTP API, shared by the handlers, the problem responses and the
//! command-line client, so each is spelled once.

/// Header carrying a write's timestamp: microseconds since the Unix epoch, decimal.
pub const X_WRITE_TIMESTAMP: &str = "x-write-timestamp";
/// Header carrying a TTL in whole seconds.
pub const X_TTL: &str = "x-ttl";
/// Header carrying a value's expiry: microseconds since the Unix epoch.
pub const X_EXPIRES_AT: &str = "x-expires-at";
/// Header of a backup response: how many records the snapshot holds.
pub const X_RECORD_COUNT: &str = "x-record-count";
