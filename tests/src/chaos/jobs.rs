//! Running the real job binaries for a scenario: `evaluator --timeframe 15m` and `position-sync`
//! as processes against the scenario's server and state, each under a time cap (a job over it is
//! killed and counted as hung), or killed on purpose at a step boundary. Collects exit code, both
//! streams and the faults the server fired while the job ran.

use crate::binance_server::{BinanceTestServer, FiredFault};
use crate::harness;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// Longest an evaluator may run: its 45 s retry window, a 35 s stop budget and slack.
pub const EVALUATOR_CAP: Duration = Duration::from_secs(150);
/// Longest a sync may run: its 35 s stop budget and slack.
pub const SYNC_CAP: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Evaluator,
    Sync,
}

impl Job {
    fn binary(self) -> &'static str {
        match self {
            Job::Evaluator => "evaluator",
            Job::Sync => "position-sync",
        }
    }
    fn args(self) -> &'static [&'static str] {
        match self {
            Job::Evaluator => &[
                "--timeframe",
                "15m",
                "--config",
                "albra.toml",
                "--state",
                "state",
            ],
            Job::Sync => &["--config", "albra.toml", "--state", "state"],
        }
    }
    pub fn cap(self) -> Duration {
        match self {
            Job::Evaluator => EVALUATOR_CAP,
            Job::Sync => SYNC_CAP,
        }
    }
}

/// One finished (or killed) job process.
#[derive(Clone, Debug)]
pub struct JobRun {
    pub job: Job,
    /// What the scenario meant by it: `faulted`, `clean rerun`, `killed at AfterOrder`, ….
    pub label: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Over its time cap: killed by the runner.
    pub hung: bool,
    /// Killed on purpose at a step boundary.
    pub killed: bool,
    pub elapsed: Duration,
    /// Faults the server fired while it ran (with any job running beside it).
    pub faults: Vec<FiredFault>,
}

impl JobRun {
    /// Every line it printed, stdout then stderr.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.stdout.lines().chain(self.stderr.lines())
    }
}

/// A job process started in the background.
pub struct Running {
    job: Job,
    label: String,
    child: tokio::process::Child,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
    started: Instant,
    faults_before: usize,
}

fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: Option<R>) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Starts `job` on the scenario in `dir` against `server`.
pub fn spawn(job: Job, label: &str, dir: &Path, server: &BinanceTestServer) -> Running {
    let mut cmd = harness::command(job.binary(), dir, &server.url, &[]);
    cmd.args(job.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", job.binary()));
    Running {
        job,
        label: label.to_string(),
        out: drain(child.stdout.take()),
        err: drain(child.stderr.take()),
        child,
        started: Instant::now(),
        faults_before: server.fired_faults().len(),
    }
}

impl Running {
    /// Waits for the job to exit within its cap; over the cap it is killed and marked hung.
    pub async fn finish(mut self, server: &BinanceTestServer) -> JobRun {
        let cap = self.job.cap().saturating_sub(self.started.elapsed());
        let (code, hung) = match tokio::time::timeout(cap, self.child.wait()).await {
            Ok(status) => (status.ok().and_then(|s| s.code()), false),
            Err(_) => {
                let _ = self.child.kill().await;
                (None, true)
            }
        };
        self.collect(server, code, hung, false).await
    }

    /// Kills the job now (SIGKILL), as a crash at a step boundary.
    pub async fn kill(mut self, server: &BinanceTestServer) -> JobRun {
        let _ = self.child.kill().await;
        self.collect(server, None, false, true).await
    }

    /// Whether the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    async fn collect(
        self,
        server: &BinanceTestServer,
        code: Option<i32>,
        hung: bool,
        killed: bool,
    ) -> JobRun {
        let stdout = self.out.await.unwrap_or_default();
        let stderr = self.err.await.unwrap_or_default();
        JobRun {
            job: self.job,
            label: self.label,
            code,
            stdout,
            stderr,
            hung,
            killed,
            elapsed: self.started.elapsed(),
            faults: server.fired_faults().split_off(self.faults_before),
        }
    }
}

/// Runs `job` to completion (within its cap).
pub async fn run(job: Job, label: &str, dir: &Path, server: &BinanceTestServer) -> JobRun {
    spawn(job, label, dir, server).finish(server).await
}
