//! The write-ahead log that carries durability between checkpoints.
//!
//! An fsynced redb commit costs several page writes and a sync of the whole file; a
//! log append is one sequential write and one `fdatasync`. So each batch is committed
//! to redb *without* fsync and its resulting changes (the records as written, not the
//! requests) are appended here; the batch is acknowledged once the log is synced.
//! Every so often a checkpoint commits redb durably and empties the log.
//!
//! After a crash, redb comes back at its last durable commit, which records the log
//! sequence number (LSN) it contains; [`replay`] re-applies every logged batch after it.
//! Replaying results is idempotent, so a batch applied twice ends the same.
//!
//! The file starts with `magic u32 | file_id u64`, the id of the database file it
//! belongs to (stored in its `meta` table); a log left behind by another database
//! file — say, after a restore put a different file in place — is ignored.
//!
//! Frame, all big-endian: `magic u32 | payload_len u32 | crc32 u32 | lsn u64 | payload`,
//! the CRC covering lsn and payload. A torn or corrupt tail (a batch whose sync never
//! finished, so never acknowledged) ends the replay.
//! Payload: entries `01 | klen u32 | key | rlen u32 | record` (put),
//! `02 | klen u32 | key` (remove), `03` (clear).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x544D_574C; // "TMWL"
const FILE_MAGIC: u32 = 0x544D_5731; // "TMW1"
const FILE_HEADER: usize = 4 + 8;
const HEADER: usize = 4 + 4 + 4 + 8;

pub const PUT: u8 = 1;
pub const REMOVE: u8 = 2;
pub const CLEAR: u8 = 3;

/// A logged batch: its sequence number and its changes.
pub type Batch = (u64, Vec<Entry>);

/// One logged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Put { key: Vec<u8>, record: Vec<u8> },
    Remove { key: Vec<u8> },
    Clear,
}

/// Append the encoding of a put to a batch payload.
pub fn log_put(payload: &mut Vec<u8>, key: &[u8], record: &[u8]) {
    payload.push(PUT);
    push_bytes(payload, key);
    push_bytes(payload, record);
}

pub fn log_remove(payload: &mut Vec<u8>, key: &[u8]) {
    payload.push(REMOVE);
    push_bytes(payload, key);
}

pub fn log_clear(payload: &mut Vec<u8>) {
    payload.push(CLEAR);
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are capped far below 4 GiB by the service's limits.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    file_id: u64,
    /// Bytes of batches after the file header.
    len: u64,
    frame: Vec<u8>,
}

impl Wal {
    /// Open (creating) the log of database `file_id` and return every intact batch in
    /// it, in order. A log that belongs to another database yields nothing.
    pub fn open(path: &Path, file_id: u64) -> std::io::Result<(Self, Vec<Batch>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut wal = Self {
            file,
            path: path.to_path_buf(),
            file_id,
            len: 0,
            frame: Vec::new(),
        };
        let ours = bytes.get(..FILE_HEADER) == Some(&file_header(file_id)[..]);
        if !ours {
            if bytes.len() > FILE_HEADER {
                tracing::warn!(path = %path.display(), "ignoring a write-ahead log that belongs to another database file");
            }
            wal.reset()?;
            return Ok((wal, Vec::new()));
        }
        let (batches, intact) = parse(&bytes[FILE_HEADER..]);
        // Drop a torn tail so new frames follow the last intact one.
        let end = (FILE_HEADER + intact) as u64;
        wal.file.set_len(end)?;
        wal.file.seek(SeekFrom::Start(end))?;
        wal.len = intact as u64;
        Ok((wal, batches))
    }

    /// Append one batch (not yet synced).
    pub fn append(&mut self, lsn: u64, payload: &[u8]) -> std::io::Result<()> {
        self.frame.clear();
        self.frame.extend_from_slice(&MAGIC.to_be_bytes());
        self.frame
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&lsn.to_be_bytes());
        crc.update(payload);
        self.frame.extend_from_slice(&crc.finalize().to_be_bytes());
        self.frame.extend_from_slice(&lsn.to_be_bytes());
        self.frame.extend_from_slice(payload);
        self.file.write_all(&self.frame)?;
        self.len += self.frame.len() as u64;
        Ok(())
    }

    /// A second handle on the log file, for syncing from another thread.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Make every appended batch durable (the writer syncs through [`Wal::sync_handle`]).
    #[cfg(test)]
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empty the log after a checkpoint made its contents durable in redb.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&file_header(self.file_id))?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn file_header(file_id: u64) -> [u8; FILE_HEADER] {
    let mut header = [0u8; FILE_HEADER];
    header[..4].copy_from_slice(&FILE_MAGIC.to_be_bytes());
    header[4..].copy_from_slice(&file_id.to_be_bytes());
    header
}

/// Parse frames until the end or the first damaged one; returns the batches and the
/// length of the intact prefix.
fn parse(bytes: &[u8]) -> (Vec<Batch>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while let Some((lsn, entries, used)) = parse_frame(&bytes[at..]) {
        batches.push((lsn, entries));
        at += used;
    }
    (batches, at)
}

fn parse_frame(bytes: &[u8]) -> Option<(u64, Vec<Entry>, usize)> {
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if be32(0)? != MAGIC {
        return None;
    }
    let len = be32(4)? as usize;
    let crc = be32(8)?;
    let lsn_bytes = bytes.get(12..20)?;
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(lsn_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let lsn = u64::from_be_bytes(lsn_bytes.try_into().ok()?);
    Some((lsn, parse_entries(payload)?, HEADER + len))
}

fn parse_entries(mut p: &[u8]) -> Option<Vec<Entry>> {
    fn take<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(p.get(..4)?.try_into().ok()?) as usize;
        let bytes = p.get(4..4usize.checked_add(len)?)?;
        *p = &p[4 + len..];
        Some(bytes)
    }
    let mut entries = Vec::new();
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        entries.push(match tag {
            PUT => {
                let key = take(&mut p)?.to_vec();
                let record = take(&mut p)?.to_vec();
                Entry::Put { key, record }
            }
            REMOVE => Entry::Remove {
                key: take(&mut p)?.to_vec(),
            },
            CLEAR => Entry::Clear,
            _ => return None,
        });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (mut wal, old) = Wal::open(&path, 42).unwrap();
            assert!(old.is_empty());
            let mut p = Vec::new();
            log_put(&mut p, b"k", b"record");
            log_remove(&mut p, b"gone");
            wal.append(7, &p).unwrap();
            let mut q = Vec::new();
            log_clear(&mut q);
            wal.append(8, &q).unwrap();
            wal.sync().unwrap();
        }
        // A torn third frame: header only.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&MAGIC.to_be_bytes()).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        let (wal, batches) = Wal::open(&path, 42).unwrap();
        assert_eq!(
            batches,
            vec![
                (
                    7,
                    vec![
                        Entry::Put {
                            key: b"k".to_vec(),
                            record: b"record".to_vec()
                        },
                        Entry::Remove {
                            key: b"gone".to_vec()
                        }
                    ]
                ),
                (8, vec![Entry::Clear]),
            ]
        );
        assert_eq!(
            wal.len() + FILE_HEADER as u64,
            std::fs::metadata(&path).unwrap().len()
        );
        // The same log is ignored by (and emptied for) another database file.
        let (wal, batches) = Wal::open(&path, 43).unwrap();
        assert!(batches.is_empty());
        assert!(wal.is_empty());
    }

    #[test]
    fn a_corrupt_frame_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (mut wal, _) = Wal::open(&path, 1).unwrap();
            let mut p = Vec::new();
            log_put(&mut p, b"a", b"1");
            wal.append(1, &p).unwrap();
            wal.append(2, &p).unwrap();
            wal.sync().unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (_, batches) = Wal::open(&path, 1).unwrap();
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let bytes: Vec<u8> = (0..(seed as usize % 64))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
