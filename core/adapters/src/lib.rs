//! Albra's adapters: the code the function binaries share to meet the outside world. Today it
//! holds the Lambda glue ([`lambda`]: cold-start wiring, the scheduled-event contract, retryable
//! errors, run metrics), which `evaluator` and `position-sync` both link instead of compiling one
//! file twice. The other adapters (Binance REST, the SQLite and DynamoDB stores, env/SSM secrets,
//! Telegram, EMF, app wiring) still live in `albra-core` and move here with issue 21's split, so
//! that `albra-core` depends on no network, AWS, SQLite or clock crate.

pub mod lambda;
