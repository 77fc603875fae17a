//! placeholder
pub mod config;
pub mod connection;
pub mod datastore;
pub mod env;
pub mod error;
pub mod row;
pub mod secret;
pub mod tbl;
