//! The HTML front end's shared pieces, for `albra report -o FILE.html` and next the dashboard:
//! the page templates in `web/templates` (minijinja, HTML-escaped by default) and the chart
//! library vendored in `web/vendor/uplot` (uPlot 1.6.32 from npm, MIT, its LICENSE beside it),
//! inlined into every page so a saved file works offline. Pages lay the query layer's types out
//! and compute no figure.

use albra_core::domain::utc_minute;
use albra_core::report::Report;
use minijinja::{context, Environment};

/// uPlot's browser build (`uPlot.iife.min.js`, defines the global `uPlot`).
pub const UPLOT_JS: &str = include_str!("../../../web/vendor/uplot/uPlot.iife.min.js");
/// uPlot's stylesheet.
pub const UPLOT_CSS: &str = include_str!("../../../web/vendor/uplot/uPlot.min.css");
const REPORT_TEMPLATE: &str = include_str!("../../../web/templates/report.html");

/// A page could not be rendered (a template that does not fit the data: a bug, not an input).
#[derive(Debug, thiserror::Error)]
#[error("rendering the {page} page: {source}")]
pub struct RenderError {
    page: &'static str,
    source: minijinja::Error,
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

    /// The inlined uPlot is the version web/package-lock.json pins (web/vendor/README.md says
    /// how to update both together).
    #[test]
    fn the_vendored_chart_library_is_the_locked_version() {
        let lock: serde_json::Value =
            serde_json::from_str(include_str!("../../../web/package-lock.json")).unwrap();
        let version = lock["packages"]["node_modules/uplot"]["version"]
            .as_str()
            .expect("uplot in web/package-lock.json");
        let banner = UPLOT_JS.lines().next().unwrap_or_default();
        assert!(
            banner.contains(&format!("(v{version})")),
            "vendored {banner} but the lockfile pins {version}"
        );
    }
}
