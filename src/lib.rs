//! tidemark: a session store that refuses stale writes.
//!
//! Every write carries the client's timestamp; the store commits it only when it is
//! newer than the one it holds. The front doors — HTTP/JSON ([`http`]), the Tokyo
//! Tyrant binary protocol ([`tyrant`]) and, when configured, memcached ([`memcached`])
//! — call one [`service::Service`], which is the only caller of the [`store::Store`],
//! which is the only module that touches redb.
//! The rule itself lives in [`guard`].

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod guard;
pub mod http;
pub mod listener;
pub mod memcached;
pub mod metrics;
pub mod record;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod tyrant;
