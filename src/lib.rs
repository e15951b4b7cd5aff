//! message-switch-rs: a wire-compatible reimplementation of the XenServer / XCP-ng
//! message-switch.

pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod logs;
#[cfg(test)]
mod proptest_support;
pub mod protocol;
pub mod server;
pub mod sexp;
pub mod store;
pub mod systemd;
