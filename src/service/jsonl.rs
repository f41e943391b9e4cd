//! The JSON-lines format of `tidemark export` / `import` and `/admin/export` /
//! `/admin/import`: one record per line,
//!
//! ```text
//! {"key": <base64>, "timestamp": u64, "tombstone": bool, "value": <base64>|null,
//!  "content_type": str|null, "expires_at": u64|null, "deleted_at": u64|null}
//! ```
//!
//! Base64 is the standard alphabet with padding (RFC 4648 §4). Times are microseconds
//! since the Unix epoch: `timestamp` is the client's write timestamp, `expires_at` and
//! `deleted_at` are server times.
//!
//! [`ExportReader`] turns [`Service::export`] into these bytes; [`Importer`] splits a
//! byte stream back into lines and applies them in batches through
//! [`Service::import`], i.e. through the guard.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaType, Type};

use crate::record::{DEFAULT_CONTENT_TYPE, FieldClock, FieldClocks, Meta, Record, State};
use crate::service::maintenance::Imported;
use crate::service::{Policy, Service, ServiceError};

/// Media type of the export stream and the import body.
pub const JSONL_MEDIA_TYPE: &str = "application/x-ndjson";

/// Room on a line for everything but the base64 key and value (field names, numbers,
/// the content type).
const LINE_OVERHEAD: usize = 64 * 1024;
/// Invalid lines listed in an [`ImportReport`]; the rest are only counted.
pub const MAX_LISTED_ERRORS: usize = 100;
/// Records handed to one [`Service::import`] call (one write transaction)...
const BATCH_RECORDS: usize = 1000;
/// ...or fewer, once their keys and values add up to this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// Bytes the export reader gathers before handing them on.
const EXPORT_CHUNK: usize = 64 * 1024;

/// One record as a line of the export (and import) format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExportLine {
    /// The key's bytes, base64 (standard alphabet, padded).
    #[schema(example = "c2Vzc2lvbjox")]
    pub key: String,
    /// Timestamp of the write that produced the record (µs since the Unix epoch).
    #[schema(schema_with = micros_schema)]
    pub timestamp: u64,
    /// Whether the record is a delete, kept to refuse older writes.
    pub tombstone: bool,
    /// The value's bytes, base64; null for a tombstone.
    #[schema(example = "eyJ1c2VyIjo0Mn0=")]
    pub value: Option<String>,
    /// Content type of the value; null for a tombstone (and, on import, for
    /// `application/octet-stream`).
    #[schema(example = "application/json")]
    pub content_type: Option<String>,
    /// Server time (µs) after which the value reads as absent; null = never.
    #[schema(schema_with = optional_micros_schema)]
    pub expires_at: Option<u64>,
    /// Server time (µs) the delete was applied (tombstones only); on import, null
    /// means the time of the import.
    #[schema(schema_with = optional_micros_schema)]
    pub deleted_at: Option<u64>,
    /// The session's owner (X-Session-Owner); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Server time (µs) the key was created; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = micros_schema)]
    pub created_at: Option<u64>,
    /// Server time (µs) of the absolute lifetime's end; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = micros_schema)]
    pub lifetime_ends: Option<u64>,
    /// Per-field timestamps of a JSON-object document with fields newer than its last
    /// whole-value write; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<ExportFields>,
    /// memcached client flags of the value; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    pub flags: u32,
}

fn is_zero(flags: &u32) -> bool {
    *flags == 0
}

/// A document's field clocks in the export format (see `FieldClocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportFields {
    /// Timestamp of the last whole-value write (0: none).
    #[schema(schema_with = micros_schema)]
    pub base: u64,
    /// Whether that write was a delete.
    pub base_deleted: bool,
    /// Each field newer than `base`: its timestamp, and whether that write removed it.
    pub clocks: std::collections::BTreeMap<String, ExportClock>,
}

/// One field's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportClock {
    #[schema(schema_with = micros_schema)]
    pub timestamp: u64,
    pub removed: bool,
}

/// The OpenAPI schema of a time in µs since the Unix epoch: every u64, in decimal.
/// utoipa gives `u64` the format `int64`, which ends at 2^63 − 1; timestamps do not.
pub struct Micros;

impl utoipa::PartialSchema for Micros {
    fn schema() -> RefOr<Schema> {
        micros_schema().into()
    }
}

impl ToSchema for Micros {}

/// The schema of [`Micros`], for fields (`#[schema(schema_with = micros_schema)]`).
pub fn micros_schema() -> Object {
    micros_object(Type::Integer.into())
}

/// [`micros_schema`] or null, for optional fields.
pub fn optional_micros_schema() -> Object {
    micros_object(SchemaType::Array(vec![Type::Integer, Type::Null]))
}

fn micros_object(schema_type: SchemaType) -> Object {
    ObjectBuilder::new()
        .schema_type(schema_type)
        .minimum(Some(0))
        .maximum(Some(u64::MAX))
        .examples([1_767_225_600_000_000_u64])
        .build()
}

impl ExportLine {
    pub fn from_record(key: &[u8], record: &Record) -> Self {
        let (value, content_type, expires_at, deleted_at) = match &record.state {
            State::Live {
                value,
                content_type,
                expires_at,
            } => (
                Some(BASE64.encode(value)),
                Some(content_type.clone()),
                *expires_at,
                None,
            ),
            State::Tombstone { deleted_at } => (None, None, None, Some(*deleted_at)),
        };
        let meta = &record.meta;
        Self {
            key: BASE64.encode(key),
            timestamp: record.timestamp,
            tombstone: matches!(record.state, State::Tombstone { .. }),
            value,
            content_type,
            expires_at,
            deleted_at,
            owner: meta.owner.clone(),
            created_at: meta.created_at,
            lifetime_ends: meta.lifetime_ends,
            flags: meta.flags,
            fields: meta.fields.as_ref().map(|f| ExportFields {
                base: f.base,
                base_deleted: f.base_deleted,
                clocks: f
                    .clocks
                    .iter()
                    .map(|(name, c)| {
                        (
                            name.clone(),
                            ExportClock {
                                timestamp: c.timestamp,
                                removed: c.removed,
                            },
                        )
                    })
                    .collect(),
            }),
        }
    }

    /// The key and record this line describes; `now` stands in for a missing
    /// `deleted_at`. The error says what is wrong with the line.
    pub fn into_record(self, now: u64) -> Result<(Vec<u8>, Record), String> {
        let key = BASE64
            .decode(&self.key)
            .map_err(|e| format!("`key` is not base64: {e}"))?;
        let record = if self.tombstone {
            if self.value.is_some() {
                return Err("a tombstone has no `value` (expected null)".into());
            }
            if self.expires_at.is_some() {
                return Err("a tombstone has no `expires_at` (expected null)".into());
            }
            if self.owner.is_some()
                || self.lifetime_ends.is_some()
                || self.fields.is_some()
                || self.flags != 0
            {
                return Err(
                    "a tombstone has no `owner`, `lifetime_ends`, `fields` or `flags`".into(),
                );
            }
            Record::tombstone(self.timestamp, self.deleted_at.unwrap_or(now))
        } else {
            let Some(value) = self.value else {
                return Err("a live record needs a `value` (base64)".into());
            };
            if self.deleted_at.is_some() {
                return Err("only a tombstone has `deleted_at` (expected null)".into());
            }
            let value = BASE64
                .decode(&value)
                .map_err(|e| format!("`value` is not base64: {e}"))?;
            let content_type = self
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
            let mut record = Record::live(self.timestamp, value, content_type, self.expires_at);
            record.meta = Meta {
                owner: self.owner,
                created_at: self.created_at,
                lifetime_ends: self.lifetime_ends,
                flags: self.flags,
                fields: self.fields.map(|f| FieldClocks {
                    base: f.base,
                    base_deleted: f.base_deleted,
                    clocks: f
                        .clocks
                        .into_iter()
                        .map(|(name, c)| {
                            (
                                name,
                                FieldClock {
                                    timestamp: c.timestamp,
                                    removed: c.removed,
                                },
                            )
                        })
                        .collect(),
                }),
            };
            record
        };
        Ok((key, record))
    }
}

/// Append `record` as one line (newline included) to `out`.
pub fn encode_line(key: &[u8], record: &Record, out: &mut Vec<u8>) {
    // Serializing plain strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &ExportLine::from_record(key, record));
    out.push(b'\n');
}

/// Parse one line (without its newline).
pub fn decode_line(line: &[u8], now: u64) -> Result<(Vec<u8>, Record), String> {
    serde_json::from_slice::<ExportLine>(line)
        .map_err(|e| format!("not a record line: {e}"))?
        .into_record(now)
}

/// The longest line an import accepts under `policy`: base64 makes bytes 4/3 as long,
/// so twice the key and value limits plus room for the rest is always enough for a
/// record the store would take.
pub fn max_line_bytes(policy: &Policy) -> usize {
    policy
        .max_value_bytes
        .saturating_mul(2)
        .saturating_add(policy.max_key_bytes.saturating_mul(2))
        .saturating_add(LINE_OVERHEAD)
}

/// [`Service::export`] as a byte stream of JSON lines. A store failure surfaces as a
/// read error, so a consumer can tell a cut-short export from a complete one.
pub struct ExportReader {
    records: mpsc::Receiver<Result<(Vec<u8>, Record), ServiceError>>,
    buffer: Vec<u8>,
    position: usize,
    /// A failure seen while filling the buffer, reported once the buffer is drained.
    failed: Option<ServiceError>,
    exported: Arc<AtomicU64>,
}

impl ExportReader {
    pub fn new(records: mpsc::Receiver<Result<(Vec<u8>, Record), ServiceError>>) -> Self {
        Self {
            records,
            buffer: Vec::with_capacity(EXPORT_CHUNK),
            position: 0,
            failed: None,
            exported: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records encoded so far (shared, for progress reports).
    pub fn exported(&self) -> Arc<AtomicU64> {
        self.exported.clone()
    }

    fn push(&mut self, item: Result<(Vec<u8>, Record), ServiceError>) {
        match item {
            Ok((key, record)) => {
                encode_line(&key, &record, &mut self.buffer);
                self.exported.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed = Some(e),
        }
    }
}

impl AsyncRead for ExportReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.position < this.buffer.len() {
                let end = this.buffer.len().min(this.position + out.remaining());
                out.put_slice(&this.buffer[this.position..end]);
                this.position = end;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed.take() {
                tracing::error!(error = %e, "export failed");
                return Poll::Ready(Err(io::Error::other(e)));
            }
            this.buffer.clear();
            this.position = 0;
            match ready!(this.records.poll_recv(cx)) {
                Some(item) => this.push(item),
                None => return Poll::Ready(Ok(())),
            }
            // Gather what is already waiting, so one read carries many lines.
            while this.failed.is_none() && this.buffer.len() < EXPORT_CHUNK {
                match this.records.try_recv() {
                    Ok(item) => this.push(item),
                    Err(_) => break,
                }
            }
        }
    }
}

/// What an import did, line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Non-blank lines read.
    pub lines: u64,
    /// Records stored: newer than what the store held for the key, or the key was free.
    pub applied: u64,
    /// Records identical to what the store already held; nothing changed.
    pub repeated: u64,
    /// Records older than what the store holds for the key; skipped.
    pub stale: u64,
    /// Records with the same timestamp as the stored one but different content; skipped.
    pub tie: u64,
    /// Lines that are not valid records, or records the store refuses (over a size
    /// limit, timestamp too far in the future); skipped.
    pub invalid: u64,
    /// The first invalid lines (at most 100), with the reason.
    pub errors: Vec<LineError>,
}

/// Why one line was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: u64,
    pub error: String,
}

/// The store failed during an import: records from earlier lines may have been applied
/// (importing the same input again is safe — they come back as `repeated`).
#[derive(Debug, thiserror::Error)]
#[error("the import stopped near line {line}: {source}")]
pub struct ImportFailed {
    pub line: u64,
    pub source: ServiceError,
}

/// Splits a byte stream into lines, bounds each line, and applies records in batches
/// through [`Service::import`].
pub struct Importer {
    service: Service,
    max_line: usize,
    /// Lines completed so far (the number of the line being assembled, minus one).
    line: u64,
    partial: Vec<u8>,
    /// The current line outgrew `max_line`; its remaining bytes are dropped.
    overlong: bool,
    batch: Vec<(Vec<u8>, Record)>,
    batch_lines: Vec<u64>,
    batch_bytes: usize,
    report: ImportReport,
}

impl Importer {
    pub fn new(service: Service) -> Self {
        Self {
            max_line: max_line_bytes(service.policy()),
            service,
            line: 0,
            partial: Vec::new(),
            overlong: false,
            batch: Vec::new(),
            batch_lines: Vec::new(),
            batch_bytes: 0,
            report: ImportReport::default(),
        }
    }

    /// The longest line this importer accepts.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Lines completed so far.
    pub fn lines_seen(&self) -> u64 {
        self.line
    }

    /// Take the next bytes of the input, applying every batch that fills up.
    pub async fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ImportFailed> {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..end]);
            self.end_line().await?;
            chunk = &chunk[end + 1..];
        }
        self.take(chunk);
        Ok(())
    }

    /// The input has ended: apply what is left (a last line needs no newline).
    pub async fn finish(mut self) -> Result<ImportReport, ImportFailed> {
        if self.overlong || !self.partial.is_empty() {
            self.end_line().await?;
        }
        self.flush().await?;
        Ok(self.report)
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > self.max_line {
            self.overlong = true;
            self.partial = Vec::new();
            return;
        }
        self.partial.extend_from_slice(bytes);
    }

    async fn end_line(&mut self) -> Result<(), ImportFailed> {
        self.line += 1;
        let number = self.line;
        if std::mem::take(&mut self.overlong) {
            self.report.lines += 1;
            let reason = format!("the line is longer than {} bytes", self.max_line);
            self.invalid(number, reason);
            return Ok(());
        }
        if self.partial.trim_ascii().is_empty() {
            self.partial.clear();
            return Ok(());
        }
        self.report.lines += 1;
        let decoded = decode_line(&self.partial, self.service.now());
        self.partial.clear();
        match decoded {
            Ok((key, record)) => {
                self.batch_bytes += key.len()
                    + match &record.state {
                        State::Live { value, .. } => value.len(),
                        State::Tombstone { .. } => 0,
                    };
                self.batch.push((key, record));
                self.batch_lines.push(number);
                if self.batch.len() >= BATCH_RECORDS || self.batch_bytes >= BATCH_BYTES {
                    self.flush().await?;
                }
            }
            Err(reason) => self.invalid(number, reason),
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ImportFailed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.batch);
        let lines = std::mem::take(&mut self.batch_lines);
        self.batch_bytes = 0;
        let first_line = lines.first().copied().unwrap_or(self.line);
        let outcomes = self
            .service
            .import(records)
            .await
            .map_err(|source| ImportFailed {
                line: first_line,
                source,
            })?;
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            match outcome {
                Imported::Applied => self.report.applied += 1,
                Imported::Repeated => self.report.repeated += 1,
                Imported::Stale { .. } => self.report.stale += 1,
                Imported::Tie { .. } => self.report.tie += 1,
                Imported::Refused(e) => self.invalid(line, e.to_string()),
            }
        }
        Ok(())
    }

    fn invalid(&mut self, line: u64, error: String) {
        self.report.invalid += 1;
        if self.report.errors.len() < MAX_LISTED_ERRORS {
            self.report.errors.push(LineError { line, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_live_records_and_tombstones() {
        let records = [
            (
                b"k\x00\xff".to_vec(),
                Record::live(7, b"v\x01".to_vec(), "text/plain".into(), Some(99)),
            ),
            (b"gone".to_vec(), Record::tombstone(8, 12)),
            (Vec::new(), Record::live(9, Vec::new(), "a/b".into(), None)),
        ];
        for (key, record) in records {
            let mut line = Vec::new();
            encode_line(&key, &record, &mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let decoded = decode_line(&line[..line.len() - 1], 0).expect("decodes");
            assert_eq!(decoded, (key, record));
        }
    }

    #[test]
    fn field_order_and_nulls_follow_the_documented_format() {
        let mut line = Vec::new();
        encode_line(b"a", &Record::tombstone(5, 6), &mut line);
        assert_eq!(
            String::from_utf8(line).expect("utf-8"),
            "{\"key\":\"YQ==\",\"timestamp\":5,\"tombstone\":true,\"value\":null,\
             \"content_type\":null,\"expires_at\":null,\"deleted_at\":6}\n"
        );
    }

    #[test]
    fn inconsistent_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("{", "not a record line"),
            ("[1,2]", "not a record line"),
            (
                r#"{"key":"!!","timestamp":1,"tombstone":false,"value":"","content_type":null,"expires_at":null,"deleted_at":null}"#,
                "`key` is not base64",
            ),
            (
                r#"{"key":"YQ==","timestamp":1,"tombstone":false,"value":null,"content_type":null,"expires_at":null,"deleted_at":null}"#,
                "needs a `value`",
            ),
            (
                r#"{"key":"YQ==","timestamp":1,"tombstone":true,"value":"YQ==","content_type":null,"expires_at":null,"deleted_at":3}"#,
                "has no `value`",
            ),
            (
                r#"{"key":"YQ==","timestamp":-1,"tombstone":true,"value":null,"content_type":null,"expires_at":null,"deleted_at":3}"#,
                "not a record line",
            ),
        ] {
            let error = decode_line(line.as_bytes(), 0).expect_err(line);
            assert!(error.contains(reason), "{line}: {error}");
        }
    }

    #[test]
    fn client_flags_travel_as_flags_and_only_when_not_zero() {
        let mut record = Record::live(7, b"v".to_vec(), "a/b".into(), None);
        record.meta.flags = u32::MAX;
        let mut line = Vec::new();
        encode_line(b"k", &record, &mut line);
        let text = String::from_utf8(line.clone()).expect("utf-8");
        assert!(text.contains("\"flags\":4294967295"), "{text}");
        let decoded = decode_line(&line[..line.len() - 1], 0).expect("decodes");
        assert_eq!(decoded, (b"k".to_vec(), record));

        let mut line = Vec::new();
        encode_line(
            b"k",
            &Record::live(7, b"v".to_vec(), "a/b".into(), None),
            &mut line,
        );
        assert!(!String::from_utf8(line).expect("utf-8").contains("flags"));

        let flagged_tombstone = r#"{"key":"YQ==","timestamp":1,"tombstone":true,"value":null,"content_type":null,"expires_at":null,"deleted_at":3,"flags":2}"#;
        let error = decode_line(flagged_tombstone.as_bytes(), 0).expect_err("refused");
        assert!(error.contains("`flags`"), "{error}");
        let too_big = r#"{"key":"YQ==","timestamp":1,"tombstone":false,"value":"","content_type":null,"expires_at":null,"deleted_at":null,"flags":4294967296}"#;
        assert!(decode_line(too_big.as_bytes(), 0).is_err());
    }

    #[test]
    fn a_tombstone_without_deleted_at_is_stamped_with_now() {
        let line = r#"{"key":"YQ==","timestamp":1,"tombstone":true,"value":null,"content_type":null,"expires_at":null,"deleted_at":null}"#;
        let (_, record) = decode_line(line.as_bytes(), 42).expect("decodes");
        assert_eq!(record, Record::tombstone(1, 42));
    }
}
