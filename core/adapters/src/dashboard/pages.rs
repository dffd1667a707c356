//! One handler per page: read the query layer, lay the answer out. A query's refusal (an
//! unknown account, a bad date) is a 400 naming the field and value; a store that cannot be
//! read is a 503; neither shows a half page.

use super::Dashboard;
use crate::web::{self, RenderError};
use albra_core::domain::{utc_minute, Symbol, Timeframe};
use albra_core::query::history::{self, TradeFilter, TradeTotals};
use albra_core::query::{queries, QueryError};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use chrono::NaiveDate;
use minijinja::{context, Value};
use rust_decimal::prelude::ToPrimitive;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;
/// How often the overview reloads itself (s); the history pages every minute.
const OVERVIEW_REFRESH_S: u32 = 30;
const HISTORY_REFRESH_S: u32 = 60;
/// Candles on the chart: one request of weight 5 to Binance.
const CHART_CANDLES: usize = 1000;

type Params = Query<HashMap<String, String>>;

/// Why a page could not be shown.
pub(super) enum PageError {
    BadRequest(String),
    Query(QueryError),
    Render(RenderError),
}

impl From<QueryError> for PageError {
    fn from(e: QueryError) -> Self {
        PageError::Query(e)
    }
}

impl From<RenderError> for PageError {
    fn from(e: RenderError) -> Self {
        PageError::Render(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response(),
            PageError::Query(
                e @ (QueryError::UnknownAccount { .. } | QueryError::UnknownStrategy { .. }),
            ) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
            PageError::Query(e) => {
                tracing::error!(error = %e, "dashboard: query failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the state store could not be read: {e}\n"),
                )
                    .into_response()
            }
            PageError::Render(e) => internal(e),
        }
    }
}

/// A template that does not fit its data: a bug, logged and answered 500.
pub(super) fn internal(e: RenderError) -> Response {
    tracing::error!(error = %e, "dashboard: rendering failed");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

pub(super) type Page = Result<Response, PageError>;

/// What every page's layout shows: which page, the store, when, how often it reloads.
fn page(d: &Dashboard, name: &str, title: &str, refresh: Option<u32>, now: i64) -> Value {
    context! {
        page => name,
        title => title,
        refresh => refresh,
        state => d.repo.describe(),
        generated => utc_minute(now),
    }
}

fn html(d: &Dashboard, template: &'static str, ctx: Value) -> Page {
    Ok(Html(web::render(&d.env, template, ctx)?).into_response())
}

/// A parameter's value, `None` when absent or empty (a form's "all").
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// A `YYYY-MM-DD` parameter as the UTC midnight starting that day (ms).
fn day(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, PageError> {
    let Some(v) = param(q, name) else {
        return Ok(None);
    };
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Some(t.and_utc().timestamp_millis()))
        .ok_or_else(|| PageError::BadRequest(format!("{name}: `{v}` is not a date (YYYY-MM-DD)")))
}

/// A whole-number parameter in `range`.
fn number(
    q: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, PageError> {
    let Some(v) = param(q, name) else {
        return Ok(None);
    };
    match v.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(PageError::BadRequest(format!(
            "{name}: `{v}` is not a whole number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

pub(super) async fn overview(State(d): State<Arc<Dashboard>>) -> Page {
    let now = d.clock.now_ms();
    let status = queries::status(&d.repo, &d.cfg, now).await?;
    let ctx = context! {
        status => status,
        ..page(&d, "overview", "Overview", Some(OVERVIEW_REFRESH_S), now)
    };
    html(&d, "overview.html", ctx)
}

/// `/api/status`: the status query as `albra status --json` prints it.
pub(super) async fn status_json(State(d): State<Arc<Dashboard>>) -> Page {
    let status = queries::status(&d.repo, &d.cfg, d.clock.now_ms()).await?;
    Ok(Json(status).into_response())
}

/// Where a history page's window ends: the last state write (a replay's store ends in the
/// past), never after now.
async fn window_end(d: &Dashboard, now: i64) -> Result<i64, PageError> {
    let latest = history::latest_activity(&d.repo, &d.cfg).await?;
    Ok(latest.map_or(now, |t| (t + 1).min(now)))
}

pub(super) async fn equity(State(d): State<Arc<Dashboard>>, Query(q): Params) -> Page {
    let now = d.clock.now_ms();
    let days = number(&q, "days", 1..=3650)?.unwrap_or(30);
    let to = window_end(&d, now).await?;
    let from = to - i64::from(days) * DAY_MS;
    let equity = history::equity_overview(&d.repo, &d.cfg, from, to).await?;
    let mut curves = equity.accounts.clone();
    if equity.accounts.len() > 1 {
        curves.push(equity.combined.clone());
    }
    let ctx = context! {
        equity => equity,
        curves => curves,
        days => days,
        uplot_js => web::UPLOT_JS,
        uplot_css => web::UPLOT_CSS,
        ..page(&d, "equity", "Equity", Some(HISTORY_REFRESH_S), now)
    };
    html(&d, "equity.html", ctx)
}

/// The trade filter of a query string; `to` is the last day included.
fn trade_filter(q: &HashMap<String, String>) -> Result<TradeFilter, PageError> {
    Ok(TradeFilter {
        account: param(q, "account").map(str::to_string),
        strategy: param(q, "strategy").map(str::to_string),
        symbol: param(q, "symbol").map(str::to_string),
        from: day(q, "from")?,
        to: day(q, "to")?.map(|t| t + DAY_MS),
    })
}

/// The filter as a query string again (the CSV link and the performance link carry it).
fn filter_query(q: &HashMap<String, String>) -> String {
    ["account", "strategy", "symbol", "from", "to"]
        .iter()
        .filter_map(|k| param(q, k).map(|v| format!("{k}={}", urlencoding::encode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// The configured strategies' names and symbols, for the filters' choices.
fn choices(d: &Dashboard) -> (Vec<String>, Vec<String>, Vec<String>) {
    let accounts = d.cfg.accounts.iter().map(|a| a.id.0.clone()).collect();
    let strategies = d.cfg.strategies.iter().map(|s| s.name.clone()).collect();
    let symbols: BTreeSet<String> = d
        .cfg
        .strategies
        .iter()
        .flat_map(|s| s.symbols.iter().map(|x| x.0.clone()))
        .collect();
    (accounts, strategies, symbols.into_iter().collect())
}

pub(super) async fn trades(State(d): State<Arc<Dashboard>>, Query(q): Params) -> Page {
    let now = d.clock.now_ms();
    let filter = trade_filter(&q)?;
    let trades = history::closed_trades(&d.repo, &d.cfg, &filter).await?;
    let (accounts, strategies, symbols) = choices(&d);
    let ctx = context! {
        total => TradeTotals::of(&trades),
        trades => trades,
        filter => filter,
        dates => context! { from => param(&q, "from"), to => param(&q, "to") },
        query => filter_query(&q),
        accounts => accounts,
        strategies => strategies,
        symbols => symbols,
        ..page(&d, "trades", "Trades", None, now)
    };
    html(&d, "trades.html", ctx)
}

pub(super) async fn trades_csv(State(d): State<Arc<Dashboard>>, Query(q): Params) -> Page {
    let filter = trade_filter(&q)?;
    let trades = history::closed_trades(&d.repo, &d.cfg, &filter).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"albra-trades.csv\"",
            ),
        ],
        history::trades_csv(&trades),
    )
        .into_response())
}

pub(super) async fn performance(State(d): State<Arc<Dashboard>>, Query(q): Params) -> Page {
    let now = d.clock.now_ms();
    let days = number(&q, "days", 1..=3650)?;
    let account = param(&q, "account");
    let performance = queries::performance(&d.repo, &d.cfg, account, days, now).await?;
    let ctx = context! {
        performance => performance,
        days => days,
        ..page(&d, "performance", "Performance", Some(HISTORY_REFRESH_S), now)
    };
    html(&d, "performance.html", ctx)
}

/// The chart's symbol and timeframe: as asked, else the first configured symbol at the
/// timeframe of the first strategy that trades it.
fn chart_target(
    d: &Dashboard,
    q: &HashMap<String, String>,
) -> Result<(Symbol, Timeframe), PageError> {
    let symbol = match param(q, "symbol") {
        Some(s) => Symbol::new(s.to_ascii_uppercase()),
        None => d
            .cfg
            .strategies
            .iter()
            .find_map(|s| s.symbols.first().cloned())
            .unwrap_or_else(|| Symbol::new("BTCUSDT")),
    };
    let tf = match param(q, "tf") {
        Some(t) => t.parse::<Timeframe>().map_err(|_| {
            PageError::BadRequest(format!(
                "tf: `{t}` is not a timeframe ({})",
                Timeframe::ALL.map(|t| t.to_string()).join(", ")
            ))
        })?,
        None => d
            .cfg
            .strategies
            .iter()
            .find(|s| s.symbols.contains(&symbol))
            .map_or(Timeframe::M15, |s| s.timeframe),
    };
    Ok((symbol, tf))
}

fn f(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

pub(super) async fn chart(State(d): State<Arc<Dashboard>>, Query(q): Params) -> Page {
    let now = d.clock.now_ms();
    let (symbol, tf) = chart_target(&d, &q)?;
    let to = day(&q, "to")?.map_or(now, |t| (t + DAY_MS).min(now));
    let (account, strategy) = (param(&q, "account"), param(&q, "strategy"));
    let (accounts, strategies, symbols) = choices(&d);
    let base = page(&d, "chart", &format!("{symbol} {tf}"), None, now);
    let mut ctx = context! {
        symbol => &symbol, tf => tf, account => account, strategy => strategy,
        to_day => param(&q, "to"), accounts => accounts, strategies => strategies,
        symbols => symbols, timeframes => Timeframe::ALL, lwc_js => web::LWC_JS,
        ..base.clone()
    };
    let got = match d.candles.candles(&symbol, tf, CHART_CANDLES, to).await {
        Ok(c) if c.candles.is_empty() => Err(format!(
            "no closed {symbol} {tf} candles up to {}",
            utc_minute(to)
        )),
        other => other,
    };
    let c = match got {
        Ok(c) => c,
        Err(error) => {
            let empty = context! { candles => Vec::<u8>::new(), marks => Vec::<u8>::new(), lines => Vec::<u8>::new() };
            ctx = context! { error => error, chart => empty, candles => Vec::<u8>::new(), ..ctx };
            return html(&d, "chart.html", ctx);
        }
    };
    let from = c.candles[0].open_time;
    let end = c.candles[c.candles.len() - 1].close_time(tf);
    let marks =
        history::symbol_marks(&d.repo, &d.cfg, account, strategy, &symbol, tf, from, end).await?;
    let candles: Vec<Value> = c
        .candles
        .iter()
        .map(|k| {
            context! { time => k.open_time / 1000, open => f(k.open.get()), high => f(k.high.get()),
            low => f(k.low.get()), close => f(k.close.get()) }
        })
        .collect();
    let lines: Vec<Value> = marks
        .open
        .iter()
        .flat_map(|p| {
            let stop = p.stop_loss.map(|s| context! { kind => "stop", price => f(s.get()), title => format!("stop {}", p.strategy) });
            let tp = p.take_profit.map(|s| context! { kind => "take_profit", price => f(s.get()), title => format!("TP {}", p.strategy) });
            stop.into_iter().chain(tp)
        })
        .collect();
    let chart = context! { candles => &candles, marks => &marks.marks, lines => lines };
    ctx = context! {
        chart => chart, candles => candles, marks => marks, source => c.source,
        from => from, to => end, ..ctx
    };
    html(&d, "chart.html", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_trade_filter_reads_days_and_names_a_bad_one() {
        let f = trade_filter(&q(&[
            ("account", "main"),
            ("strategy", ""),
            ("from", "2026-01-01"),
            ("to", "2026-01-01"),
        ]))
        .ok()
        .unwrap();
        assert_eq!(f.account.as_deref(), Some("main"));
        assert_eq!(f.strategy, None);
        assert_eq!(f.from, Some(1_767_225_600_000));
        assert_eq!(
            f.to,
            Some(1_767_225_600_000 + DAY_MS),
            "the last day is included"
        );
        let Err(PageError::BadRequest(m)) = trade_filter(&q(&[("from", "01/02/2026")])) else {
            panic!("a bad date must be refused");
        };
        assert_eq!(m, "from: `01/02/2026` is not a date (YYYY-MM-DD)");
        assert_eq!(
            filter_query(&q(&[
                ("symbol", "BTC USDT"),
                ("account", ""),
                ("to", "2026-01-02")
            ])),
            "symbol=BTC%20USDT&to=2026-01-02"
        );
        let Err(PageError::BadRequest(m)) = number(&q(&[("days", "0")]), "days", 1..=3650) else {
            panic!("days 0 must be refused");
        };
        assert_eq!(m, "days: `0` is not a whole number from 1 to 3650");
    }
}
