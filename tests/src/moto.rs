//! `MotoServer`: a real moto server (DynamoDB, SSM, …) on a loopback port for one test, so the real
//! AWS SDK clients are exercised over HTTP without touching AWS.
//!
//! The executable is `<workspace>/.venv/bin/moto_server` (installed by `make venv`), or whatever
//! `ALBRA_MOTO_SERVER` names. A missing moto fails the test loudly rather than skipping it.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// How long moto may take to answer after launch (Python start-up on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server; killed when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("endpoint", &self.endpoint())
            .field("pid", &self.child.id())
            .field("log", &self.log)
            .finish()
    }
}

/// The moto executable: `ALBRA_MOTO_SERVER`, else the workspace virtualenv's `moto_server`.
pub fn moto_executable() -> PathBuf {
    if let Some(p) = std::env::var_os("ALBRA_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    workspace_root().join(".venv/bin/moto_server")
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port for moto")
}

/// True once something on the port answers an HTTP request.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl MotoServer {
    /// Launch moto on a free loopback port and wait until it answers. Panics (with the server's
    /// output) if moto is missing or does not come up.
    pub fn start() -> MotoServer {
        let exe = moto_executable();
        if !exe.exists() {
            panic!(
                "moto server not found at {}: run `make venv` in {} (installs moto[server] into \
                 .venv), or set ALBRA_MOTO_SERVER to a moto_server executable",
                exe.display(),
                workspace_root().display()
            );
        }
        let mut last_failure = String::new();
        // The free port is only known free when probed; another process may grab it before moto
        // binds, in which case moto exits and we try another.
        for _ in 0..3 {
            match Self::try_start(&exe, free_port()) {
                Ok(server) => return server,
                Err(why) => last_failure = why,
            }
        }
        panic!(
            "moto server {} did not start: {last_failure}",
            exe.display()
        );
    }

    fn try_start(exe: &std::path::Path, port: u16) -> Result<MotoServer, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let started = Instant::now();
        let tail = |log: &PathBuf| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status} on port {port}; output:\n{}",
                    tail(&log)
                ));
            }
            if answers(port) {
                return Ok(MotoServer {
                    child,
                    port,
                    log,
                    _dir: dir,
                });
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no answer on port {port} within {START_TIMEOUT:?}; output:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration that talks to this server: its endpoint, region us-east-1 and static
    /// test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "albra-moto",
            ))
            .load()
            .await
    }

    /// Environment for a spawned binary so its default AWS configuration chain reaches this server.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }

    /// The server's output so far (requests and tracebacks), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
