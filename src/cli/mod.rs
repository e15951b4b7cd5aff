//! The command lines of the two binaries, as clap definitions.
//!
//! They live in the library, not in `src/bin/`, so that the man pages and shell completions
//! are generated from the very definitions the binaries parse, and so that the config file
//! ([`crate::config`]) can accept every option of `message-switch` as a field.
//!
//! - [`switch::command`] / [`switch::Args`]: `message-switch`.
//! - [`message_cli::command`] / [`message_cli::Cli`]: `message-cli`.

pub mod message_cli;
pub mod switch;
