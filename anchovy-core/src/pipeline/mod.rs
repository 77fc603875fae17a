//! How a run goes: the lifecycle ([`session`]), what operator code sees ([`context`]),
//! operators and the registry ([`operator`]), table options declared once ([`options`]), sources, sinks and the pipeline of a
//! table task ([`stream`]), the default sink that writes the datastore ([`buffer`]),
//! task logs ([`task`]), and workers sharing one anchovy's tables ([`worker`]).

pub mod buffer;
pub mod context;
pub mod operator;
pub mod options;
pub mod session;
pub mod stream;
pub mod task;
pub mod worker;
