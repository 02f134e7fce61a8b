//! Strangler-fig migration gateway: a reverse proxy in front of legacy REST
//! services that, per route, passes calls through, dual-writes them as Avro
//! events to Kafka, or answers 202 after the event is durably in Kafka.
//!
//! The request's path through the crate: [`config`] → [`routing`] →
//! [`modes`] (passthrough / dual-write / async) → [`upstream`] or
//! [`events`]; [`problem`] turns every failure into a response.

pub mod adapter;
pub mod admin;
pub mod canary;
pub mod config;
pub mod control;
pub mod demo;
pub mod events;
pub mod idempotency;
pub mod listener;
pub mod metrics;
pub mod modes;
pub mod operations;
pub mod plan;
pub mod problem;
pub mod reload;
pub mod routing;
pub mod schema;
pub mod server;
pub mod shadow;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use server::{Gateway, StartError};
