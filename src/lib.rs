//! message-switch-rs: a wire-compatible reimplementation of the XenServer / XCP-ng
//! message-switch.

pub mod protocol;
