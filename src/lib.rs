//! jira-auth-proxy: an authenticating reverse proxy for Jira Server / Data Center.
//!
//! The request path is `pipeline::handle`: admit → local endpoints → authenticate →
//! identify → authorize → forward → audit. Everything a request needs is compiled from
//! one `Config` into a `runtime::Runtime`.
#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod identity;
pub mod observe;
pub mod pipeline;
pub mod runtime;
pub mod server;
pub mod store;
pub mod time;
pub mod upstream;
pub mod wire;
