//! Log setup for the binaries: JSON lines on stderr in Lambda (CloudWatch Logs indexes them),
//! human-readable text elsewhere (a terminal, journald, cron mail), with colour only on a
//! terminal. `ALBRA_LOG_FORMAT=json|text` forces one. Level from `ALBRA_LOG` (default `warn`).
//! Metrics are not logs: they go to stdout as EMF lines (see [`crate::emf`]).

use std::io::IsTerminal;

/// Whether logs are JSON: forced by `format`, else JSON exactly when in Lambda and not on a
/// terminal.
fn json_logs(format: Option<&str>, in_lambda: bool, terminal: bool) -> bool {
    match format {
        Some("json") => true,
        Some("text") => false,
        _ => in_lambda && !terminal,
    }
}

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALBRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let terminal = std::io::stderr().is_terminal();
    let json = json_logs(
        std::env::var("ALBRA_LOG_FORMAT").ok().as_deref(),
        std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
        terminal,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal && !json)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::json_logs;

    #[test]
    fn json_in_lambda_text_elsewhere_unless_forced() {
        assert!(json_logs(None, true, false));
        assert!(!json_logs(None, true, true), "a terminal reads text");
        assert!(
            !json_logs(None, false, false),
            "journald and cron read text"
        );
        assert!(json_logs(Some("json"), false, true));
        assert!(!json_logs(Some("text"), true, false));
    }
}
