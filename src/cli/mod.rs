//! Maintenance outside the request path: `tidemark backup`, `restore`, `export`,
//! `import` and `migrate` (from a running Tokyo Tyrant server, see [`migrate`]). Backup, export and import work against a running server through its
//! `/admin` routes (the default) or, with `--data-dir`, on a stopped server's database
//! directly; restore always works offline. [`crate::service::jsonl`] is the record format that export
//! and import share with the `/admin` routes.

pub mod bench;
mod client;
mod files;
mod migrate;
mod offline;
mod progress;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::{BackupArgs, ExportArgs, ImportArgs, MigrateArgs, RestoreArgs};
use crate::service::jsonl::ImportReport;
use client::Admin;
use files::Staged;
use progress::{Counted, Tally, Ticker};

/// Exit status of an import that finished but skipped invalid lines.
pub const EXIT_INVALID_LINES: u8 = 3;
/// Invalid lines echoed to stderr after an import (all of them are in the report).
const ECHOED_ERRORS: usize = 10;

/// Why a maintenance command failed, as the line shown to the operator.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `tidemark backup`.
pub fn backup(args: &BackupArgs) -> ExitCode {
    run("backup", run_backup(args))
}

/// `tidemark restore`.
pub fn restore(args: &RestoreArgs) -> ExitCode {
    run("restore", run_restore(args))
}

/// `tidemark export`.
pub fn export(args: &ExportArgs) -> ExitCode {
    run("export", run_export(args))
}

/// `tidemark import`.
pub fn import(args: &ImportArgs) -> ExitCode {
    run("import", run_import(args))
}

/// `tidemark migrate`.
pub fn migrate(args: &MigrateArgs) -> ExitCode {
    run("migrate", migrate::run(args))
}

fn run(command: &str, work: impl Future<Output = Result<ExitCode, Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tidemark {command}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("tidemark {command}: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run_backup(args: &BackupArgs) -> Result<ExitCode, Failure> {
    let staged = Staged::new(&args.out, args.force)?;
    let records = match &args.target.data_dir {
        Some(data_dir) => Some(offline::backup(data_dir, staged.temp()).await?),
        None => {
            let admin = Admin::new(&args.target)?;
            let mut file = staged.create().await?;
            let tally = Tally::default();
            let shown = tally.clone();
            let ticker = Ticker::start("backup", move || {
                if shown.bytes() == 0 {
                    "waiting for the server to write its snapshot".to_string()
                } else {
                    format!("{} received", shown.describe_bytes())
                }
            });
            let records = admin.backup(&mut file, &tally).await?;
            drop(ticker);
            records
        }
    };
    let size = std::fs::metadata(staged.temp())
        .map(|m| m.len())
        .unwrap_or(0);
    let dest = staged.dest().to_path_buf();
    staged.commit()?;
    let records = records.map_or_else(String::new, |n| format!("{n} records, "));
    eprintln!(
        "tidemark backup: wrote {} ({records}{})",
        dest.display(),
        progress::bytes(size)
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_restore(args: &RestoreArgs) -> Result<ExitCode, Failure> {
    let restored = offline::restore(args).await?;
    eprintln!(
        "tidemark restore: {} now holds {} records ({} tombstones) from {}",
        restored.path.display(),
        restored.counts.records,
        restored.counts.tombstones,
        args.from.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

async fn run_export(args: &ExportArgs) -> Result<ExitCode, Failure> {
    let tally = Tally::default();
    let shown = tally.clone();
    let ticker = Ticker::start("export", move || {
        format!(
            "{} records, {}",
            shown.lines(),
            progress::bytes(shown.bytes())
        )
    });
    let staged = if is_stdio(&args.out) {
        export_into(args, &mut tokio::io::stdout(), &tally).await?;
        None
    } else {
        let staged = Staged::new(&args.out, args.force)?;
        let mut file = staged.create().await?;
        export_into(args, &mut file, &tally).await?;
        Some(staged)
    };
    drop(ticker);
    let dest = match staged {
        Some(staged) => {
            let dest = staged.dest().display().to_string();
            staged.commit()?;
            dest
        }
        None => "standard output".to_string(),
    };
    eprintln!(
        "tidemark export: wrote {} records ({}) to {dest}",
        tally.lines(),
        progress::bytes(tally.bytes())
    );
    Ok(ExitCode::SUCCESS)
}

async fn export_into(
    args: &ExportArgs,
    sink: &mut (impl AsyncWrite + Unpin),
    tally: &Tally,
) -> Result<(), Failure> {
    match &args.target.data_dir {
        Some(data_dir) => offline::export(data_dir, sink, tally).await?,
        None => Admin::new(&args.target)?.export(sink, tally).await?,
    }
    sink.shutdown()
        .await
        .map_err(|e| Failure(format!("cannot write the output: {e}")))
}

async fn run_import(args: &ImportArgs) -> Result<ExitCode, Failure> {
    let source: Box<dyn AsyncRead + Send + Sync + Unpin> = if is_stdio(&args.input) {
        Box::new(tokio::io::stdin())
    } else {
        let file = tokio::fs::File::open(&args.input)
            .await
            .map_err(|e| Failure(format!("cannot open {}: {e}", args.input.display())))?;
        Box::new(file)
    };
    let tally = Tally::default();
    let shown = tally.clone();
    let source = Counted::new(source, tally.clone());
    let ticker = Ticker::start("import", move || {
        format!(
            "{} lines, {} read",
            shown.lines(),
            progress::bytes(shown.bytes())
        )
    });
    let report = match &args.target.data_dir {
        Some(data_dir) => offline::import(data_dir, &args.limits, source).await?,
        None => Admin::new(&args.target)?.import(source).await?,
    };
    drop(ticker);
    summarize(&report);
    Ok(if report.invalid > 0 {
        ExitCode::from(EXIT_INVALID_LINES)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report as JSON on stdout; a human summary and the first invalid lines on stderr.
fn summarize(report: &ImportReport) {
    if let Ok(json) = serde_json::to_string(report) {
        println!("{json}");
    }
    eprintln!(
        "tidemark import: {} lines: {} applied, {} repeated, {} stale, {} tie, {} invalid",
        report.lines, report.applied, report.repeated, report.stale, report.tie, report.invalid
    );
    for error in report.errors.iter().take(ECHOED_ERRORS) {
        eprintln!("tidemark import: line {}: {}", error.line, error.error);
    }
    let unlisted = report.invalid.saturating_sub(ECHOED_ERRORS as u64);
    if unlisted > 0 {
        eprintln!("tidemark import: ...and {unlisted} more invalid lines");
    }
}
