//! Albra's adapters: everything that talks to the outside world, behind the ports of
//! `albra_core::ports`, shared by the function binaries and the operator CLI.
//!
//! - [`binance`]: the Binance USD-M REST client (signing, weights, error classification, wire
//!   parsing) behind `Exchange`;
//! - [`store`]: the SQLite and DynamoDB state stores behind `StateStore`, and [`store::open_store`];
//! - [`secrets`]: keys from `.env`/the environment and SSM Parameter Store behind `Secrets`;
//! - [`telegram`]: the Telegram Bot API client (`BotClient`) and the notifier built on it;
//! - [`http`]: the outbound HTTP policy every client carrying a secret follows;
//! - [`emf`]: CloudWatch Embedded Metric Format lines;
//! - [`status_report`]: sending the 30-minute status report once per slot;
//! - [`app`]: wiring a configuration into an `Engine` (exchange, store, notifier, secrets);
//! - [`lambda`] and [`lambda_event`]: the Lambda glue of `evaluator` and `position-sync`;
//! - [`fuzzing`]: the entry points the fuzz targets and their corpus test share.

pub mod app;
pub mod binance;
pub mod chart;
pub mod dashboard;
pub mod emf;
pub mod fuzzing;
pub mod http;
pub mod lambda;
pub mod lambda_event;
pub mod secrets;
pub mod status_report;
pub mod store;
pub mod telegram;
/// The HTML pages (the `albra-web` crate), here under their old path.
pub use albra_web as web;
