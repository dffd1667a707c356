//! Albra's HTML pages (the `albra-web` crate), for `albra report -o FILE.html`, `albra backtest --report`
//! and the dashboard: the
//! page templates in `web/templates` (minijinja, HTML-escaped by default), the filters they lay
//! figures out with, and the chart libraries vendored in `web/vendor` (uPlot 1.6.32, MIT, for
//! lines; TradingView Lightweight Charts 5.3.0, Apache-2.0, for candles; each from npm with its
//! LICENSE beside it), inlined into every page so a page works offline and loads nothing from
//! elsewhere. Pages lay the query layer's types out and compute no figure.

pub mod backtest;

use albra_core::domain::{age_text, money_text, utc_minute};
use albra_core::report::Report;
use minijinja::{context, Environment, Value};

/// uPlot's browser build (`uPlot.iife.min.js`, defines the global `uPlot`).
pub const UPLOT_JS: &str = include_str!("../vendor/uplot/uPlot.iife.min.js");
/// uPlot's stylesheet.
pub const UPLOT_CSS: &str = include_str!("../vendor/uplot/uPlot.min.css");
/// Lightweight Charts' standalone build (defines the global `LightweightCharts`).
pub const LWC_JS: &str =
    include_str!("../vendor/lightweight-charts/lightweight-charts.standalone.production.js");
const REPORT_TEMPLATE: &str = include_str!("../templates/report.html");

/// The dashboard's templates, by name (`base.html` is the layout the others extend).
const DASHBOARD_TEMPLATES: [(&str, &str); 7] = [
    (
        "base.html",
        include_str!("../templates/dashboard/base.html"),
    ),
    (
        "login.html",
        include_str!("../templates/dashboard/login.html"),
    ),
    (
        "overview.html",
        include_str!("../templates/dashboard/overview.html"),
    ),
    (
        "equity.html",
        include_str!("../templates/dashboard/equity.html"),
    ),
    (
        "trades.html",
        include_str!("../templates/dashboard/trades.html"),
    ),
    (
        "performance.html",
        include_str!("../templates/dashboard/performance.html"),
    ),
    (
        "chart.html",
        include_str!("../templates/dashboard/chart.html"),
    ),
];

/// The dashboard's templates with the filters they use, parsed once.
pub fn dashboard_env() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    for (name, text) in DASHBOARD_TEMPLATES {
        env.add_template(name, text).map_err(|source| RenderError {
            page: "dashboard",
            source,
        })?;
    }
    add_filters(&mut env);
    Ok(env)
}

/// The filters pages lay figures out with: `money` (two decimals), `sign` (`pos`/`neg`),
/// `when` (ms as a UTC minute), `age` (ms as a duration).
pub fn add_filters(env: &mut Environment<'_>) {
    env.add_filter("money", money);
    env.add_filter("sign", sign);
    env.add_filter("when", when);
    env.add_filter("age", age);
}

/// Render `page` of `env` with `ctx`.
pub fn render(
    env: &Environment<'_>,
    page: &'static str,
    ctx: Value,
) -> Result<String, RenderError> {
    env.get_template(page)
        .and_then(|t| t.render(ctx))
        .map_err(|source| RenderError { page, source })
}

/// A figure as the query gave it (decimals arrive as their exact text, floats as numbers).
fn decimal_of(v: &Value) -> Option<rust_decimal::Decimal> {
    if let Some(s) = v.as_str() {
        return s.parse().ok();
    }
    let f = f64::try_from(v.clone()).ok()?;
    rust_decimal::Decimal::from_f64_retain(f)
}

/// [`money_text`]: two decimals, rounded as the bot rounds; `-` for none.
fn money(v: Value) -> String {
    decimal_of(&v).map_or_else(|| "-".to_string(), money_text)
}

/// `pos`, `neg` or nothing: the class that colours a signed figure.
fn sign(v: Value) -> &'static str {
    match decimal_of(&v) {
        Some(d) if d.is_sign_positive() && !d.is_zero() => "pos",
        Some(d) if d.is_sign_negative() && !d.is_zero() => "neg",
        _ => "",
    }
}

/// A time (ms) as `2026-01-01 00:15 UTC`; `-` for none.
fn when(v: Value) -> String {
    i64::try_from(v).map_or_else(|_| "-".to_string(), utc_minute)
}

/// A duration (ms) as the operator CLI writes ages ([`age_text`]); `-` for none.
pub fn age(v: Value) -> String {
    i64::try_from(v).map_or_else(|_| "-".to_string(), age_text)
}

/// A page could not be rendered (a template that does not fit the data: a bug, not an input).
#[derive(Debug, thiserror::Error)]
#[error("rendering the {page} page: {source}")]
pub struct RenderError {
    page: &'static str,
    source: minijinja::Error,
}

impl RenderError {
    pub fn new(page: &'static str, source: minijinja::Error) -> RenderError {
        RenderError { page, source }
    }
}

/// The report as one self-contained HTML page: figures, notes, and each account's equity and
/// drawdown charts drawn by the inlined uPlot. `generated_at` (ms) is shown as when it was made.
pub fn report_html(report: &Report, generated_at: i64) -> Result<String, RenderError> {
    let err = |source| RenderError {
        page: "report",
        source,
    };
    let mut env = Environment::new();
    // The `.html` name turns HTML escaping on for every value the template prints.
    env.add_template("report.html", REPORT_TEMPLATE)
        .map_err(err)?;
    let curves: Vec<_> = report.accounts.iter().map(|a| &a.curve).collect();
    let period = format!(
        "{} to {}",
        utc_minute(report.window.start),
        utc_minute(report.window.end)
    );
    let ctx = context! {
        report => report,
        period => period,
        generated => utc_minute(generated_at),
        curves => curves,
        uplot_js => UPLOT_JS,
        uplot_css => UPLOT_CSS,
    };
    env.get_template("report.html")
        .and_then(|t| t.render(ctx))
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use albra_core::domain::AccountId;
    use albra_core::report::{build, AccountData, ReportKind};
    use albra_core::state::EquityPoint;

    #[test]
    fn the_page_inlines_the_chart_library_and_escapes_what_it_prints() {
        // The library is inlined in a <script>: it must not close it early.
        assert!(!UPLOT_JS.to_ascii_lowercase().contains("</script"));
        let data = AccountData {
            account: AccountId::new("<b>x</b></script>"),
            points: vec![EquityPoint {
                at: 1_796_515_200_000 + 60_000,
                equity: rust_decimal::Decimal::from(1000),
                api_weight_1m: Some(7),
            }],
            trades: vec![],
        };
        let r = build(ReportKind::Daily, 1_796_601_600_000, &[data]);
        let page = report_html(&r, 1_796_601_600_000).unwrap();
        assert!(page.contains(UPLOT_JS));
        assert!(
            page.contains("&lt;b&gt;x&lt;&#x2f;b&gt;") || page.contains("&lt;b&gt;x&lt;/b&gt;"),
            "{page}"
        );
        assert!(!page.contains("<b>x</b>"));
        assert!(
            page.contains("\"equity\":1000.0"),
            "the curve's data is in the page"
        );
        assert!(page.contains("peak 7, mean 7"));
    }

    /// Each inlined library is the version web/package-lock.json pins (web/vendor/README.md
    /// says how to update both together), and none can close its <script> early.
    #[test]
    fn the_vendored_chart_libraries_are_the_locked_versions() {
        let lock: serde_json::Value =
            serde_json::from_str(include_str!("../package-lock.json")).unwrap();
        let locked = |package: &str| {
            lock["packages"][format!("node_modules/{package}")]["version"]
                .as_str()
                .unwrap_or_else(|| panic!("{package} in web/package-lock.json"))
                .to_string()
        };
        let version = locked("uplot");
        let banner = UPLOT_JS.lines().next().unwrap_or_default();
        assert!(
            banner.contains(&format!("(v{version})")),
            "vendored {banner} but the lockfile pins {version}"
        );
        let version = locked("lightweight-charts");
        let banner: String = LWC_JS.lines().take(4).collect();
        assert!(
            banner.contains(&format!("Lightweight Charts™ v{version}")),
            "vendored {banner} but the lockfile pins {version}"
        );
        assert!(!LWC_JS.to_ascii_lowercase().contains("</script"));
    }

    #[test]
    fn the_filters_lay_figures_out_as_the_bot_does() {
        assert_eq!(money(Value::from("9795.870232691748")), "9795.87");
        assert_eq!(
            money(Value::from("-0.005")),
            "0.00",
            "round_dp: half to even"
        );
        assert_eq!(money(Value::from(2.5f64)), "2.50");
        assert_eq!(money(Value::from(())), "-");
        assert_eq!(
            (
                sign(Value::from("-1")),
                sign(Value::from("0")),
                sign(Value::from("3"))
            ),
            ("neg", "", "pos")
        );
        assert_eq!(when(Value::from(0)), "1970-01-01 00:00 UTC");
        // The operator CLI's ages (domain::age_text).
        assert_eq!(age(Value::from(42_347_508_750i64)), "490.1 d");
        assert_eq!(age(Value::from(59_999)), "59 s");
        assert_eq!(age(Value::from(3_660_000)), "61 min");
        assert_eq!(age(Value::from(())), "-");
    }

    #[test]
    fn every_dashboard_template_parses() {
        let env = dashboard_env().unwrap();
        for (name, _) in DASHBOARD_TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
