//! The Tokyo Tyrant front door: the binary protocol of ttserver 1.1.41 on its own port,
//! with the memcached and HTTP text subsets ttserver serves there too ([`text`]), over
//! the same [`Service`](crate::service::Service) as HTTP.
//!
//! Data flows one way: [`server`] reads the socket, [`request`] decodes a frame
//! (two-step, length-capped), [`commands`] runs it as service calls and [`reply`]
//! writes the answer. Every command's identity (byte, names, field layout, reply
//! shape, masked answer, handler) is one row of the table in [`command`]; how each
//! kind of request field is read and written is in `layout`; the bytes both
//! directions share are in [`wire`]; [`client`] is the other end (request encoder,
//! reply decoder) for the benchmark, the tests and the fuzz targets.
//!
//! What is served, byte by byte, and where tidemark deliberately differs from
//! ttserver (iteration per connection and in key order, `copy` never runs shell
//! commands): `docs/tyrant-protocol.md`.

pub mod client;
pub mod command;
pub mod commands;
mod layout;
pub mod reply;
pub mod request;
mod server;
mod settings;
mod stat;
#[cfg(test)]
mod testing;
pub mod text;
pub mod wire;

pub use server::serve;
pub use settings::{Denied, Settings, Shared};
