//! The dashboard: read-only pages over the query layer, served by `albra dashboard` on a host
//! and by the `dashboard` Lambda behind a function URL, through this one axum [`router`].
//!
//! - [`auth`]: the token, exchanged at `/login` for a signed session cookie; every other page
//!   answers only to that cookie (a page without one redirects to `/login`, the CSV and JSON
//!   get 401, and neither carries a figure).
//! - `pages`: one handler per page. Each asks the query layer (`queries::status`,
//!   `history::*`, `queries::performance`) and lays the answer out with the templates in
//!   `web/templates/dashboard`; none computes a figure, so the pages say what
//!   `albra status --json` and the bot's `/status` say.
//! - [`CandleSource`]: the chart page's candles (Binance's public klines, or candle files).
//!
//! Nothing here writes to the store or reaches an account: the dashboard holds no API key.

pub mod auth;
mod candles;
mod pages;

pub use candles::{CandleSource, Candles};

use crate::web::{self, RenderError};
use albra_core::config::Config;
use albra_core::ports::{Clock, Secret};
use albra_core::state::StateRepo;
use auth::Auth;
use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use minijinja::{context, Environment};
use std::sync::Arc;

/// Everything a page reads from, built once (per process, or per Lambda cold start).
pub struct Dashboard {
    repo: StateRepo,
    cfg: Config,
    candles: CandleSource,
    auth: Auth,
    env: Environment<'static>,
    clock: Arc<dyn Clock>,
}

impl Dashboard {
    pub fn new(
        repo: StateRepo,
        cfg: Config,
        candles: CandleSource,
        token: Secret,
        clock: Arc<dyn Clock>,
    ) -> Result<Dashboard, RenderError> {
        Ok(Dashboard {
            repo,
            cfg,
            candles,
            auth: Auth::new(token),
            env: web::dashboard_env()?,
            clock,
        })
    }
}

/// The dashboard over the store at `state` (`./state`, `dynamodb:TABLE`, …): its chart draws
/// candles from `data` files when given, else from the configured Binance's public klines (no
/// key). The store is opened as every read command opens it.
pub async fn build(
    cfg: Config,
    state: &str,
    data: Vec<std::path::PathBuf>,
    token: Secret,
) -> Result<Dashboard, String> {
    let store = crate::store::open_store(state)
        .await
        .map_err(|e| format!("state store {state}: {e}"))?;
    let candles = if data.is_empty() {
        let url = cfg.binance_url();
        let client = crate::binance::BinanceClient::new(crate::app::binance_config(&cfg), None)
            .map_err(|e| format!("Binance client for {url}: {e}"))?;
        CandleSource::Exchange {
            client: Arc::new(client),
            host: albra_core::config::url_host(&url),
        }
    } else {
        for f in &data {
            if !f.is_file() {
                return Err(format!("--data {}: no such file", f.display()));
            }
        }
        CandleSource::Files(data)
    };
    Dashboard::new(
        StateRepo::new(store),
        cfg,
        candles,
        token,
        Arc::new(albra_core::ports::SystemClock),
    )
    .map_err(|e| e.to_string())
}

/// The pages and their guard.
pub fn router(d: Arc<Dashboard>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/equity", get(pages::equity))
        .route("/trades", get(pages::trades))
        .route("/trades.csv", get(pages::trades_csv))
        .route("/performance", get(pages::performance))
        .route("/chart", get(pages::chart))
        .route("/api/status", get(pages::status_json))
        .route_layer(middleware::from_fn_with_state(d.clone(), require_session));
    Router::new()
        .merge(pages)
        .route("/login", get(login_page).post(login))
        .route("/logout", get(logout))
        .layer(middleware::map_response(security_headers))
        .with_state(d)
}

/// A page's request without a valid session gets no data: pages redirect to the login, data
/// (CSV, JSON) gets 401.
async fn require_session(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let cookie = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    if d.auth.session_valid(cookie, d.clock.now_ms()) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path.starts_with("/api/") || path.ends_with(".csv") {
        return (StatusCode::UNAUTHORIZED, "log in at /login first\n").into_response();
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let to = format!("/login?next={}", urlencoding::encode(&target));
    Redirect::to(&to).into_response()
}

/// Every answer: never cached (figures and the session), never framed, no referrer, and only
/// the page's own inline scripts and styles (the vendored libraries are inlined).
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    res
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Where to go after logging in: a path of this site only (never `//host` or a URL).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

fn login_form(d: &Dashboard, next: &str, error: Option<&str>) -> Response {
    let ctx = context! { next => next, error => error };
    match web::render(&d.env, "login.html", ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => pages::internal(e),
    }
}

async fn login_page(State(d): State<Arc<Dashboard>>, Query(q): Query<LoginQuery>) -> Response {
    login_form(&d, local_path(q.next.as_deref()), None)
}

/// The token for a session cookie. A wrong token waits a moment before the answer, so guessing
/// runs at a crawl (and the token is at least 24 characters).
async fn login(State(d): State<Arc<Dashboard>>, Form(f): Form<LoginForm>) -> Response {
    let next = local_path(f.next.as_deref()).to_string();
    if !d.auth.token_matches(f.token.trim()) {
        tracing::warn!("dashboard: a login with a wrong token");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut res = login_form(&d, &next, Some("That is not the dashboard's token."));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return res;
    }
    let cookie = d.auth.session_cookie(d.clock.now_ms());
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout() -> Response {
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&Auth::cleared_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn after_login_only_a_local_path_is_followed() {
        assert_eq!(
            local_path(Some("/trades?symbol=BTCUSDT")),
            "/trades?symbol=BTCUSDT"
        );
        for bad in [
            "//evil.example/x",
            "https://evil.example",
            "/\\evil",
            "x",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
