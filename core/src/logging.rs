//! Log setup for the binaries: human-readable lines on stderr at a terminal, JSON otherwise
//! (`ALBRA_LOG_FORMAT=json|text` forces one). Level from `ALBRA_LOG` (default `warn`).

use std::io::IsTerminal;

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALBRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let json = match std::env::var("ALBRA_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal() && std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
