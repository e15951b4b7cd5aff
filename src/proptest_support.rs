//! Test-only: how the crate's property tests keep the failures they find.

use proptest::test_runner::{Config, FileFailurePersistence};

/// proptest's configuration with `cases` cases per test, keeping the failing inputs it finds
/// beside the test's own source file (`numbers.rs` → `numbers.proptest-regressions`), where
/// they are replayed first on every run, instead of in a directory of their own at the top
/// of the repository.
pub(crate) fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
