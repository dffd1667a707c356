//! The in-process state store ([`memory`]): scratch runs and unit tests. The stores that keep state
//! on disk or in AWS (SQLite, DynamoDB) are adapters (`albra_adapters::store`).

pub mod memory;
