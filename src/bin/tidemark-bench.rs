//! `tidemark-bench`: the same load generator as `tidemark bench`, under the name the
//! benchmark scripts (bench/compare.sh, bench/scale.sh, bench/profile.sh) invoke.

use std::process::ExitCode;

use clap::Parser;
use tidemark::config::BenchArgs;

fn main() -> ExitCode {
    tidemark::cli::bench::run(&BenchArgs::parse())
}
