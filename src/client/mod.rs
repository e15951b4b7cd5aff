//! The async client library and the RPC patterns.
