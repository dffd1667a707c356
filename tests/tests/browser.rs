//! The headless-Chromium harness (`albra_tests::browser`) against a page served on loopback: a
//! login form whose POST sets an `HttpOnly; Secure; SameSite=Strict` cookie, then a page whose
//! text is written by script after load. Needs Debian's chromium and chromium-driver
//! (`make browser`, which `make test` runs).

use albra_tests::browser::{Browser, BrowserConfig, Cookie};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LOGIN: &str = r#"<!doctype html><html><head><title>login</title></head><body>
<form method="post" action="/login">
  <input id="user" name="user" value="prefilled">
  <button id="go" type="submit">Log in</button>
</form></body></html>"#;

async fn login(body: String) -> impl IntoResponse {
    let user = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("user="))
        .unwrap_or_default()
        .to_string();
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, format!("/app?user={user}")),
            (
                header::SET_COOKIE,
                "s=1; HttpOnly; Secure; SameSite=Strict; Path=/".to_string(),
            ),
        ],
    )
}

/// `#seen` is the Cookie header this request carried; `#out` is written by script after load.
async fn app(headers: HeaderMap) -> Html<String> {
    let seen = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .replace(['<', '>', '&'], "_");
    Html(format!(
        r#"<!doctype html><html><head><title>app</title></head><body>
<p id="seen">{seen}</p>
<div id="out"></div>
<ul><li>one</li><li>two</li><li style="display:none">hidden</li><li>three</li></ul>
<a id="docs" href="/docs" data-kind="link">docs</a>
<script>
window.addEventListener('load', () => setTimeout(() => {{
  const user = new URLSearchParams(location.search).get('user');
  const out = document.getElementById('out');
  out.textContent = 'hello ' + user;
  out.className = 'ready';
}}, 300));
</script></body></html>"#
    ))
}

async fn serve() -> u16 {
    let app = Router::new()
        .route("/", get(|| async { Html(LOGIN) }))
        .route("/login", post(login))
        .route("/app", get(app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .to_path_buf()
        })
        .join("browser-screenshots")
}

/// Logs in through the form at `base`; the session cookie as the browser holds it and the Cookie
/// header the server saw on the page after the redirect.
async fn log_in(b: &Browser, base: &str) -> anyhow::Result<(Option<Cookie>, String)> {
    b.goto(&format!("{base}/")).await?;
    assert_eq!(
        b.attr("#user", "value").await?.as_deref(),
        Some("prefilled")
    );
    b.fill("#user", "alice").await?;
    b.click("#go").await?;
    b.wait_for("#out.ready", Duration::from_secs(10)).await?;
    assert_eq!(b.current_url().await?, format!("{base}/app?user=alice"));
    let cookie = b.cookies().await?.into_iter().find(|c| c.name == "s");
    Ok((cookie, b.text("#seen").await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_drives_chromium_through_a_login_form() -> anyhow::Result<()> {
    let port = serve().await;
    let t = Instant::now();
    let b = Browser::start().await?;
    eprintln!("browser started in {:?}", t.elapsed());

    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let (cookie, seen) = log_in(&b, &base).await?;
    eprintln!("log in over {base} took {:?}", t.elapsed());

    // The text written by script after load, read back after wait_for; fill cleared the field.
    assert_eq!(b.text("#out").await?, "hello alice");
    // Visible text only: the hidden item is empty.
    assert_eq!(b.texts("li").await?, ["one", "two", "", "three"]);
    assert_eq!(b.count("li").await?, 4);
    assert_eq!(b.count("table").await?, 0);
    assert_eq!(b.attr("#docs", "data-kind").await?.as_deref(), Some("link"));
    assert_eq!(b.attr("#docs", "data-missing").await?, None);
    assert_eq!(b.eval("return 6 * 7").await?, json!(42));
    assert_eq!(b.eval("return document.title").await?, json!("app"));
    assert!(b.page_source().await?.contains("hello alice"));

    // A Secure cookie over plain http on 127.0.0.1: loopback is a trustworthy origin, so
    // Chromium keeps it (flags intact) and sends it back on the redirect to /app.
    eprintln!("127.0.0.1: cookie {cookie:?}, server saw {seen:?}");
    let cookie = cookie.expect("Chromium kept the Secure cookie set over http://127.0.0.1");
    assert_eq!(cookie.value, "1");
    assert!(cookie.http_only);
    assert!(cookie.secure);
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    assert_eq!(seen, "s=1");
    // HttpOnly: the page's script does not see it.
    assert_eq!(b.eval("return document.cookie").await?, json!(""));

    // The same over http://localhost (a host of its own for cookies).
    let (cookie, seen) = log_in(&b, &format!("http://localhost:{port}")).await?;
    eprintln!("localhost: cookie {cookie:?}, server saw {seen:?}");
    let cookie = cookie.expect("Chromium kept the Secure cookie set over http://localhost");
    assert!(cookie.http_only && cookie.secure);
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    assert_eq!(seen, "s=1");

    let png = screenshot_dir().join("harness-app.png");
    let _ = std::fs::remove_file(&png);
    b.screenshot(&png).await?;
    let bytes = std::fs::read(&png)?;
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", png.display());
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());

    // Errors name the selector (and, waiting, the page and its source).
    let err = format!("{:#}", b.text("#nope").await.unwrap_err());
    assert!(err.contains("`#nope`"), "{err}");
    let err = format!("{:#}", b.click("div > #absent").await.unwrap_err());
    assert!(err.contains("`div > #absent`"), "{err}");
    let t = Instant::now();
    let err = format!(
        "{:#}",
        b.wait_for("#nope", Duration::from_millis(300))
            .await
            .unwrap_err()
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(err.contains("`#nope`"), "{err}");
    assert!(err.contains("/app?user=alice"), "{err}");
    assert!(err.contains("id=\"out\""), "{err}");
    eprintln!("wait_for error: {err}");
    let err = format!("{:#}", b.eval("return no_such_thing").await.unwrap_err());
    assert!(err.contains("no_such_thing"), "{err}");

    let t = Instant::now();
    drop(b);
    eprintln!("dropped in {:?}", t.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_missing_chromedriver_says_how_to_install_it() {
    let config = BrowserConfig {
        chromedriver: "/nonexistent/chromedriver".into(),
        ..BrowserConfig::from_env()
    };
    let err = format!("{:#}", Browser::start_with(config).await.err().unwrap());
    assert!(err.contains("/nonexistent/chromedriver"), "{err}");
    assert!(
        err.contains("install Debian's chromium and chromium-driver (`make browser`)"),
        "{err}"
    );
}
