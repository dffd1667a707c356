//! `albra-ops`: every `albra` command, including those that reach the exchange, the state stores
//! and AWS (replay, run, the operator commands, validate). `albra` executes it for those; it can also
//! be run directly, with the same arguments.

mod dashboard;
mod download;
mod operator;
mod ops;
mod telegram;
mod watch;

use albra_cli::cli::Cli;
use clap::Parser;
use std::process::ExitCode;

/// The same allocator as `albra` (see there): `replay` and the scheduler allocate per decision.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    albra_core::logging::init();
    ops::run(Cli::parse())
}
