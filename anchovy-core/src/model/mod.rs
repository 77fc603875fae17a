//! The data model: typed values and batches ([`row`]), tables and their options
//! ([`tbl`]), and bad records ([`reject`]).

pub mod reject;
pub mod row;
pub mod tbl;
