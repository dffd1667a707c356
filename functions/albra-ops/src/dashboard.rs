//! `albra dashboard`: the dashboard's pages (`albra_adapters::dashboard`) served on a host, the
//! same router the `dashboard` Lambda serves behind its function URL.

use albra_adapters::app;
use albra_adapters::dashboard;
use albra_core::config::Config;
use anyhow::{anyhow, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Serve until Ctrl-C. The token is required: without one nothing is served.
pub async fn serve(
    cfg: Config,
    state: &str,
    env_file: Option<&Path>,
    listen: SocketAddr,
    data: Vec<PathBuf>,
) -> Result<()> {
    let token = app::default_secrets(env_file)
        .map_err(|e| anyhow!("{e}"))?
        .dashboard_token(false)
        .await
        .map_err(|e| anyhow!("the dashboard needs its token: {e}"))?;
    let d = dashboard::build(cfg, state, data, token)
        .await
        .map_err(|e| anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr().context("the listening address")?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: serving on {addr} over plain HTTP: the token and the session cookie cross \
             the network in clear; put a TLS proxy in front (browsers also refuse the Secure \
             cookie over http from a non-loopback address)"
        );
    }
    // The one line a script (or a test) waits for: the address, with the port the OS chose.
    println!("albra dashboard: http://{addr}/ (state {state}; Ctrl-C stops)");
    axum::serve(listener, dashboard::router(Arc::new(d)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the dashboard server stopped")
}
