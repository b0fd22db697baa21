//! Helpers shared by the crate's unit tests.

use proptest::test_runner::{contextualize_config, Config, RngSeed};

/// The configuration of the crate's property tests: `cases` cases drawn from a fixed seed,
/// so that every run (CI's included) checks the same inputs, and no regression files
/// written into the source tree (an input worth keeping becomes a plain test instead).
/// `PROPTEST_CASES` and `PROPTEST_RNG_SEED` still override both, for a longer or a
/// different search by hand.
pub(crate) fn proptest_config(cases: u32) -> Config {
    contextualize_config(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5e55_10a5),
        ..Config::default()
    })
}
