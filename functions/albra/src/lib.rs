//! The operator CLI, built as two executables from one command line ([`cli`]):
//!
//! - `albra` runs the candle-file tools itself ([`tools`]: indicators, signals, backtest,
//!   walk-forward) and hands every other command to `albra-ops` beside it ([`exec_ops`]), which
//!   takes over the process with the same arguments, environment and pid.
//! - `albra-ops` (its own package, `functions/albra-ops`, the only one of the two that links
//!   `albra-adapters`) runs every command: replay, run, status, positions, validate, and the
//!   tools through [`tools`].
//!
//! Why two: a program that links the AWS SDK, TLS and SQLite carries 51,656 relocations that the
//! loader applies before `main` on every start. `albra` leaves those crates out (7,005
//! relocations): the reference backtest as a whole process went from 19.5 to 18.3 ms, and over a
//! 300-row file from 4.0 to 2.5 ms. Commands that talk to the exchange or AWS take seconds; the
//! extra `exec` costs them about a millisecond. For the same reason `make build` links `albra`
//! statically on Linux with glibc (the Makefile says why that is safe for it and not for
//! `albra-ops`).

pub mod cli;
pub mod progress;
mod report;
pub mod tools;

use std::process::ExitCode;

/// The file `albra` hands its other commands to, beside it.
pub const OPS_BINARY: &str = "albra-ops";

/// The exit status of a finished command, its error printed on one line.
pub fn exit_code(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`albra indicators … | head`): what it read was right, and there
        // is no one left to tell.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        // A flag's value that does not fit the data is the caller's to fix, as a bad flag is.
        Err(e) if range_error(&e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// A run over candles that printed its results still fails when a job reported errors on the
/// way: how many, and the first.
pub fn no_job_errors(run: &str, errors: &[String]) -> anyhow::Result<()> {
    match errors.first() {
        None => Ok(()),
        Some(first) => anyhow::bail!(
            "{} job error(s) during the {run}; first: {first}",
            errors.len()
        ),
    }
}

/// Whether `e` is a `--timerange` that holds no candle of its file, however deep the run that
/// found it.
fn range_error(e: &anyhow::Error) -> bool {
    use albra_core::backtest::BacktestError;
    use albra_core::walkforward::WalkForwardError;
    matches!(e.downcast_ref(), Some(BacktestError::Range(_)))
        || matches!(
            e.downcast_ref(),
            Some(WalkForwardError::Backtest(BacktestError::Range(_)))
        )
        || matches!(
            e.downcast_ref(),
            Some(albra_core::replay::ReplayError::Range(_))
        )
        || e.downcast_ref::<albra_core::timerange::RangeError>()
            .is_some()
}

/// Whether `e` is a write to a pipe whose reader has closed it.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Replace this process with `albra-ops` from the directory of the running executable (symlinks
/// resolved), given this process's own arguments, `argv[0]` included, so its messages still say
/// `albra`. Returns only when that fails: the error says what `command` needed and how to get it.
pub fn exec_ops(command: &str) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let ops = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(OPS_BINARY),
        Err(e) => {
            eprintln!("error: `albra {command}` runs in {OPS_BINARY}, but the path of this executable is unknown: {e}");
            return ExitCode::from(2);
        }
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "albra".into());
    let err = std::process::Command::new(&ops)
        .arg0(arg0)
        .args(args)
        .exec();
    eprintln!(
        "error: `albra {command}` runs in {OPS_BINARY}, which could not be started from {}: {err}. \
         It is built with albra (`make build`, or `cargo build --release --bins`) and must be \
         installed beside it (infra/ec2/install.sh does).",
        ops.display()
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_errors_fail_the_run_with_their_count_and_the_first() {
        assert!(super::no_job_errors("backtest", &[]).is_ok());
        let e = super::no_job_errors("replay", &["sync: timeout".into(), "x".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "2 job error(s) during the replay; first: sync: timeout"
        );
    }
}
