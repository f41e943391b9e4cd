//! Offline mode: the embedded engine's database file of a stopped server, opened
//! directly (a shared database has no offline mode: export and import go through a
//! running replica).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Failure;
use super::files::{parent_dir, sync_dir, sync_file};
use super::progress::{self, Tally, Ticker};
use crate::clock::SystemClock;
use crate::config::{RestoreArgs, WriteLimits};
use crate::metrics::Metrics;
use crate::service::jsonl::{ExportReader, ImportReport, Importer};
use crate::service::{Policy, Service};
use crate::store::{
    Counts, DB_FILE_NAME, Durability, RedbStore, StoreError, StoreOptions, WAL_FILE_NAMES,
};

/// Page cache for a maintenance open; the work is one sequential pass.
const CACHE_BYTES: usize = 64 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// Limits for opens that only read (backup, export): no write is checked against them.
const READ_ONLY_POLICY: Policy = Policy {
    max_key_bytes: usize::MAX,
    max_value_bytes: usize::MAX,
    grace_micros: 0,
    max_future_skew_micros: 0,
    max_lifetime_micros: None,
};

/// Whether opening may create a new, empty database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Existing,
    OrCreate,
}

fn open_store(data_dir: &Path, open: Open) -> Result<RedbStore, Failure> {
    let path = data_dir.join(DB_FILE_NAME);
    if open == Open::Existing && !path.is_file() {
        return Err(Failure(format!(
            "no tidemark database at {}",
            path.display()
        )));
    }
    store_in(data_dir).map_err(|e| open_failure(&path, &e))
}

/// Open (or create) the store in `dir`, as the server would.
fn store_in(dir: &Path) -> Result<RedbStore, StoreError> {
    RedbStore::open(
        &StoreOptions {
            data_dir: dir.to_path_buf(),
            durability: Durability::Immediate,
            cache_size: CACHE_BYTES,
            record_cache_size: 0,
        },
        Arc::new(Metrics::new()),
    )
}

/// redb lets one process open a file; the store reports a second open as `InUse`.
fn is_in_use(error: &StoreError) -> bool {
    matches!(error, StoreError::InUse { .. })
}

fn open_failure(path: &Path, error: &StoreError) -> Failure {
    if is_in_use(error) {
        Failure(format!(
            "{} is open in another process, most likely a running tidemark server. \
             Stop the server first, or leave out --data-dir to go through the running \
             server (--server URL)",
            path.display()
        ))
    } else {
        Failure(format!("cannot open {}: {error}", path.display()))
    }
}

fn open_service(data_dir: &Path, open: Open, policy: Policy) -> Result<Service, Failure> {
    let store = open_store(data_dir, open)?;
    Ok(Service::new(
        store,
        Arc::new(SystemClock),
        policy,
        Arc::new(Metrics::new()),
    ))
}

async fn close(service: &Service) -> Result<(), Failure> {
    service
        .close()
        .await
        .map_err(|e| Failure(format!("cannot close the database: {e}")))
}

/// Snapshot the database in `data_dir` into a new file at `dest`. Returns the number
/// of records copied.
pub async fn backup(data_dir: &Path, dest: &Path) -> Result<u64, Failure> {
    let store = open_store(data_dir, Open::Existing)?;
    let watched = dest.to_path_buf();
    let ticker = Ticker::start("backup", move || {
        let written = std::fs::metadata(&watched).map(|m| m.len()).unwrap_or(0);
        format!("snapshot file at {}", progress::bytes(written))
    });
    let snapshot = {
        let (store, dest) = (store.clone(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || store.snapshot_to(&dest))
            .await
            .map_err(|e| StoreError::engine(format!("snapshot task failed: {e}")))
            .and_then(|copied| copied)
    };
    drop(ticker);
    let closed = store
        .close()
        .await
        .map_err(|e| Failure(format!("cannot close the database: {e}")));
    let records = snapshot.map_err(|e| Failure(format!("the snapshot failed: {e}")))?;
    closed?;
    Ok(records)
}

/// Write every record of the database in `data_dir` as JSON lines into `sink`.
pub async fn export(
    data_dir: &Path,
    sink: &mut (impl AsyncWrite + Unpin),
    tally: &Tally,
) -> Result<(), Failure> {
    let service = open_service(data_dir, Open::Existing, READ_ONLY_POLICY)?;
    let copied = copy(ExportReader::new(service.export(1024)), sink, tally).await;
    let closed = close(&service).await;
    copied?;
    closed
}

async fn copy(
    mut source: impl AsyncRead + Unpin,
    sink: &mut (impl AsyncWrite + Unpin),
    tally: &Tally,
) -> Result<(), Failure> {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(|e| Failure(format!("the export failed: {e}")))?;
        if n == 0 {
            break;
        }
        sink.write_all(&buffer[..n])
            .await
            .map_err(|e| Failure(format!("cannot write the output: {e}")))?;
        tally.add(&buffer[..n]);
    }
    sink.flush()
        .await
        .map_err(|e| Failure(format!("cannot write the output: {e}")))
}

/// Apply JSON lines from `source` to the database in `data_dir` (created if missing).
pub async fn import(
    data_dir: &Path,
    limits: &WriteLimits,
    source: impl AsyncRead + Unpin,
) -> Result<ImportReport, Failure> {
    let service = open_service(data_dir, Open::OrCreate, limits.policy())?;
    let imported = feed(Importer::new(service.clone()), source).await;
    let closed = close(&service).await;
    let report = imported?;
    closed?;
    Ok(report)
}

async fn feed(
    mut importer: Importer,
    mut source: impl AsyncRead + Unpin,
) -> Result<ImportReport, Failure> {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        let n = source.read(&mut buffer).await.map_err(|e| {
            Failure(format!(
                "cannot read the input after line {}: {e}; the lines before it were imported",
                importer.lines_seen()
            ))
        })?;
        if n == 0 {
            break;
        }
        importer
            .feed(&buffer[..n])
            .await
            .map_err(|e| Failure(e.to_string()))?;
    }
    importer.finish().await.map_err(|e| Failure(e.to_string()))
}

/// What a restore put in place.
pub struct Restored {
    pub path: PathBuf,
    pub counts: Counts,
}

/// Copy a backup file into `args.data_dir` under a temporary name, check that it opens
/// as a tidemark store, and rename it into place as the database.
pub async fn restore(args: &RestoreArgs) -> Result<Restored, Failure> {
    let from = &args.from;
    let metadata = std::fs::metadata(from)
        .map_err(|e| Failure(format!("cannot read {}: {e}", from.display())))?;
    if !metadata.is_file() {
        return Err(Failure(format!("{} is not a file", from.display())));
    }
    if metadata.len() == 0 {
        return Err(Failure(format!(
            "{} is empty; it is not a tidemark backup",
            from.display()
        )));
    }
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Failure(format!("cannot create {}: {e}", data_dir.display())))?;
    let target = data_dir.join(DB_FILE_NAME);
    if target.exists() {
        if !args.force {
            return Err(Failure(format!(
                "{} already exists; pass --force to replace it (with the server stopped)",
                target.display()
            )));
        }
        // Renaming over a database a server has open would silently lose every write
        // it makes afterwards, so make sure nobody has it open.
        ensure_not_in_use(data_dir, &target).await?;
    }

    // The staging directory sits inside the data directory, so the final rename stays
    // on one filesystem and is atomic.
    let staging = Staging::create(data_dir.join(format!(".restore-{}", std::process::id())))?;
    let staged = staging.0.join(DB_FILE_NAME);
    let copy_from = from.clone();
    let copy_to = staged.clone();
    let watched = staged.clone();
    let ticker = Ticker::start("restore", move || {
        let copied = std::fs::metadata(&watched).map(|m| m.len()).unwrap_or(0);
        format!("{} copied", progress::bytes(copied))
    });
    let copied = tokio::task::spawn_blocking(move || std::fs::copy(&copy_from, &copy_to)).await;
    drop(ticker);
    match copied {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(Failure(format!(
                "cannot copy {} into {}: {e}",
                from.display(),
                data_dir.display()
            )));
        }
        Err(e) => return Err(Failure(format!("the copy failed: {e}"))),
    }
    sync_file(&staged)?;
    let counts = validate(&staging.0).await.map_err(|e| {
        Failure(format!(
            "{} is not a usable tidemark backup: {e}",
            from.display()
        ))
    })?;
    // The write-ahead log belongs to the database being replaced (opening it above
    // folded the log in). A restored file can carry the same file id as the log — the
    // same backup restored twice — and would then replay the log's batches, so the log
    // goes before the new file comes.
    for name in WAL_FILE_NAMES {
        let wal = data_dir.join(name);
        match std::fs::remove_file(&wal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure(format!(
                    "cannot remove the old write-ahead log {}: {e}",
                    wal.display()
                )));
            }
        }
    }
    std::fs::rename(&staged, &target).map_err(|e| {
        Failure(format!(
            "cannot move the restored database into place as {}: {e}",
            target.display()
        ))
    })?;
    sync_dir(parent_dir(&target));
    Ok(Restored {
        path: target,
        counts,
    })
}

/// Open the staged copy as a tidemark store (this checks the schema version) and count
/// its records.
async fn validate(staging: &Path) -> Result<Counts, String> {
    let store = store_in(staging).map_err(|e| e.to_string())?;
    let store_for_count = store.clone();
    let counts = tokio::task::spawn_blocking(move || {
        use crate::clock::Clock as _;
        store_for_count.counts(SystemClock.now_micros())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|counted| counted.map_err(|e| e.to_string()));
    let closed = store.close().await.map_err(|e| e.to_string());
    let counts = counts?;
    closed?;
    Ok(counts)
}

async fn ensure_not_in_use(data_dir: &Path, target: &Path) -> Result<(), Failure> {
    match store_in(data_dir) {
        Ok(store) => store
            .close()
            .await
            .map_err(|e| Failure(format!("cannot close {}: {e}", target.display()))),
        Err(e) if is_in_use(&e) => Err(open_failure(target, &e)),
        // A database that does not open for another reason is what --force replaces.
        Err(_) => Ok(()),
    }
}

/// A directory removed with everything in it when dropped.
struct Staging(PathBuf);

impl Staging {
    fn create(path: PathBuf) -> Result<Self, Failure> {
        // A leftover of an earlier run that had this process id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .map_err(|e| Failure(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
