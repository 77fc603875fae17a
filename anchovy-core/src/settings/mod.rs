//! What a run is told: settings layered CLI > env > config.yaml > defaults
//! ([`config`], [`env`](mod@env)), connections from `ACHVY_CNXN__*` ([`connection`]), and the
//! redaction of every secret they hold ([`secret`]).

pub mod config;
pub mod connection;
pub mod env;
pub mod secret;
