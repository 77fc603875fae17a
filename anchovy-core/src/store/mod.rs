//! What is stored, and how it stays exactly-once: the datastore and its layout
//! ([`datastore`]), data files in their formats ([`data`]), the commit record
//! ([`commit`]) with the checkpoints it carries ([`checkpoint`]), the original tool's
//! layout read without it ([`original`]), the run lease
//! ([`lease`]), table metadata ([`tbl_store`]), run results ([`results`]) and the
//! collection of what no reader needs ([`gc`]).

pub mod checkpoint;
pub mod commit;
pub mod data;
pub mod datastore;
pub mod gc;
pub mod lease;
pub mod original;
pub mod results;
pub mod tbl_store;
