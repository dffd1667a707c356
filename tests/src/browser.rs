//! Headless Chromium for the integration tests, driven through chromedriver with the W3C WebDriver
//! JSON protocol over loopback HTTP (reqwest; `fantoccini` would pull in the MPL-2.0 `webdriver`
//! crate, which deny.toml does not allow).
//!
//! [`Browser::start`] spawns `/usr/bin/chromedriver` (env `CHROMEDRIVER`) on a free loopback port
//! and opens a session on `/usr/bin/chromium` (env `CHROMIUM`) with a fresh profile in a temp dir;
//! dropping the [`Browser`] ends the session (best effort), kills chromedriver and removes the
//! profile. `make browser` installs Debian's `chromium` and `chromium-driver` when missing.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver (`make browser`)";

/// Chromium's flags: headless, and nothing that reaches for Google's hosts (this machine refuses
/// them, and a test must not depend on them).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

/// Where the binaries are: [`BrowserConfig::from_env`] reads `CHROMEDRIVER` and `CHROMIUM`.
#[derive(Clone, Debug)]
pub struct BrowserConfig {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

impl BrowserConfig {
    pub fn from_env() -> Self {
        let path = |var: &str, default: &str| {
            PathBuf::from(std::env::var_os(var).unwrap_or_else(|| default.into()))
        };
        BrowserConfig {
            chromedriver: path("CHROMEDRIVER", "/usr/bin/chromedriver"),
            chromium: path("CHROMIUM", "/usr/bin/chromium"),
        }
    }
}

/// A cookie as the browser holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None` as chromedriver reports it.
    pub same_site: Option<String>,
}

/// One chromedriver and one WebDriver session on it.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    closed: bool,
    // Dropped in this order after `Drop::drop` ended the session: chromedriver, then the profile.
    _driver: tokio::process::Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver and chromium from [`BrowserConfig::from_env`].
    pub async fn start() -> Result<Browser> {
        Browser::start_with(BrowserConfig::from_env()).await
    }

    pub async fn start_with(config: BrowserConfig) -> Result<Browser> {
        for (what, path) in [
            ("chromedriver", &config.chromedriver),
            ("chromium", &config.chromium),
        ] {
            if !path.is_file() {
                bail!("no {what} at {}: {INSTALL_HINT}", path.display());
            }
        }
        let profile = tempfile::Builder::new()
            .prefix("albra-chromium-")
            .tempdir()
            .context("creating the temp dir for the Chromium profile")?;
        let log_path = profile.path().join("chromedriver.log");
        let user_data = profile.path().join("profile");
        let port = free_port()?;
        let mut driver = tokio::process::Command::new(&config.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {}: {INSTALL_HINT}", config.chromedriver.display())
            })?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;

        // chromedriver answers /status with {"value":{"ready":true}} once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = driver.try_wait()? {
                bail!(
                    "chromedriver exited ({status}) before answering /status; its log: {}",
                    log_tail(&log_path)
                );
            }
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver on port {port} did not answer /status within 20 s; its log: {}",
                    log_tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
            "goog:chromeOptions": { "binary": config.chromium, "args": args },
        }}});
        let created = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await
        .with_context(|| {
            format!(
                "creating a session on {} (chromedriver log: {})",
                config.chromium.display(),
                log_tail(&log_path)
            )
        })?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {created}"))?;
        Ok(Browser {
            http,
            session: format!("{base}/session/{id}"),
            closed: false,
            _driver: driver,
            profile,
        })
    }

    /// Ends the session (Chromium quits); dropping does the same best-effort.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        call(&self.http, reqwest::Method::DELETE, &self.session, None)
            .await
            .context("ending the WebDriver session")?;
        Ok(())
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        call(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.cmd(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url }))
            .await
            .with_context(|| format!("opening {url}"))?;
        Ok(())
    }

    pub async fn current_url(&self) -> Result<String> {
        let v = self.get("/url").await.context("reading the current URL")?;
        string(v)
    }

    pub async fn page_source(&self) -> Result<String> {
        let v = self
            .get("/source")
            .await
            .context("reading the page source")?;
        string(v)
    }

    async fn elements(&self, css: &str) -> Result<Vec<String>> {
        let found = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        found
            .as_array()
            .ok_or_else(|| anyhow!("elements answer is not an array: {found}"))?
            .iter()
            .map(|e| {
                e[ELEMENT_KEY]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("no element reference in {e}"))
            })
            .collect()
    }

    /// The first match, or an error naming the selector and the page.
    async fn element(&self, css: &str) -> Result<String> {
        let mut found = self.elements(css).await?;
        if found.is_empty() {
            let url = self.current_url().await.unwrap_or_default();
            bail!("no element matches `{css}` on {url}");
        }
        Ok(found.swap_remove(0))
    }

    /// The first match's visible text.
    pub async fn text(&self, css: &str) -> Result<String> {
        let el = self
            .element(css)
            .await
            .with_context(|| format!("text of `{css}`"))?;
        let v = self
            .get(&format!("/element/{el}/text"))
            .await
            .with_context(|| format!("text of `{css}`"))?;
        string(v)
    }

    /// Every match's visible text, in document order.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let ctx = || format!("texts of `{css}`");
        let mut out = Vec::new();
        for el in self.elements(css).await.with_context(ctx)? {
            out.push(string(
                self.get(&format!("/element/{el}/text"))
                    .await
                    .with_context(ctx)?,
            )?);
        }
        Ok(out)
    }

    /// The first match's attribute `name`, `None` when it has none.
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        let ctx = || format!("attribute `{name}` of `{css}`");
        let el = self.element(css).await.with_context(ctx)?;
        let v = self
            .get(&format!("/element/{el}/attribute/{name}"))
            .await
            .with_context(ctx)?;
        Ok(v.as_str().map(str::to_string))
    }

    pub async fn count(&self, css: &str) -> Result<usize> {
        Ok(self
            .elements(css)
            .await
            .with_context(|| format!("counting `{css}`"))?
            .len())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let ctx = || format!("clicking `{css}`");
        let el = self.element(css).await.with_context(ctx)?;
        self.post(&format!("/element/{el}/click"), json!({}))
            .await
            .with_context(ctx)?;
        Ok(())
    }

    /// Clears the first match and types `value` into it.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let ctx = || format!("filling `{css}`");
        let el = self.element(css).await.with_context(ctx)?;
        self.post(&format!("/element/{el}/clear"), json!({}))
            .await
            .with_context(ctx)?;
        self.post(&format!("/element/{el}/value"), json!({ "text": value }))
            .await
            .with_context(ctx)?;
        Ok(())
    }

    /// Runs `js` as a function body (`return …` gives the value) and returns what it returned.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": js, "args": [] }))
            .await
            .with_context(|| format!("running script `{}`", snippet(js, 200)))
    }

    /// Polls every 100 ms until `css` matches; the error names the selector, the URL and the
    /// start of the page source.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .elements(css)
                .await
                .with_context(|| format!("waiting for `{css}`"))?;
            if !found.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let url = self.current_url().await.unwrap_or_default();
                let source = self.page_source().await.unwrap_or_default();
                bail!(
                    "`{css}` did not appear within {timeout:?} on {url}; page source: {}",
                    snippet(&source, 600)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cookies visible to the current page.
    pub async fn cookies(&self) -> Result<Vec<Cookie>> {
        let v = self.get("/cookie").await.context("reading cookies")?;
        let list = v
            .as_array()
            .ok_or_else(|| anyhow!("cookies are not an array: {v}"))?;
        Ok(list
            .iter()
            .map(|c| Cookie {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                value: c["value"].as_str().unwrap_or_default().to_string(),
                http_only: c["httpOnly"].as_bool().unwrap_or(false),
                secure: c["secure"].as_bool().unwrap_or(false),
                same_site: c["sameSite"].as_str().map(str::to_string),
            })
            .collect())
    }

    /// Writes a PNG of the viewport to `path`, creating its parent directories.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ctx = || format!("screenshot to {}", path.display());
        let png = base64_decode(&string(self.get("/screenshot").await.with_context(ctx)?)?)
            .with_context(ctx)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(ctx)?;
        }
        std::fs::write(path, png).with_context(ctx)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // Ending the session makes chromedriver quit Chromium; killing chromedriver alone would
        // leave Chromium running. Drop cannot await and may run on a current-thread runtime, so
        // the DELETE goes from a thread of its own with its own runtime and client.
        let url = self.session.clone();
        let ended = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .ok()?;
                client
                    .delete(&url)
                    .send()
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            })
        })
        .join()
        .ok()
        .flatten()
        .is_some();
        if !ended {
            // Chromium's profile lock names its pid (`<host>-<pid>`): end that one process.
            let lock = self.profile.path().join("profile/SingletonLock");
            if let Some(pid) = std::fs::read_link(lock).ok().and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target.rsplit('-').next()?.parse::<u32>().ok()
            }) {
                // Only if that pid is still this profile's Chromium (not a reused pid).
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let ours = self.profile.path().join("profile");
                if !String::from_utf8_lossy(&cmdline).contains(&*ours.to_string_lossy()) {
                    return;
                }
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// One WebDriver command: the answer's `value`, or an error with WebDriver's `error` and the
/// first line of its `message`.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let mut v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{method} {url}: {status}, not JSON: {}",
            snippet(&text, 300)
        )
    })?;
    let value = v["value"].take();
    if !status.is_success() {
        let message = value["message"].as_str().unwrap_or_default();
        bail!(
            "WebDriver {}: {}",
            value["error"].as_str().unwrap_or(status.as_str()),
            message.lines().next().unwrap_or_default()
        );
    }
    Ok(value)
}

fn string(v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        other => bail!("expected a string from WebDriver, got {other}"),
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// The first `max` characters, whitespace runs folded.
fn snippet(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &folded[..i]),
        None => folded,
    }
}

/// Standard base64 (what WebDriver's screenshot is in); padding and whitespace ignored.
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: byte {c:#04x}"),
        };
        acc = (acc << 6) | u32::from(d);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(base64_decode("a*b").is_err());
    }
}
