//! Adapters deliver gateway events from Kafka to legacy services that have
//! not migrated yet, so a route can go async before every service is
//! rewritten as a consumer.
//!
//! The delivery runtime itself lives in `gateway::adapter`, because the
//! `gateway` binary (`gateway adapter run`) and `gateway demo` run it and a
//! crate cannot depend on a crate that depends on it. This crate is what a
//! new service embeds: the runtime, re-exported, and the envelope reader.

mod envelope;

pub use envelope::{envelope, EventEnvelope};
pub use gateway::adapter as delivery;
