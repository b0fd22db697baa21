//! Helpers shared by the crate's unit tests.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, Config, RngSeed};
use serde_json::Value;

/// The Unix milliseconds of the first and last instants `time` holds (years ±9999).
pub(crate) const MIN_MS: i64 = -377_705_116_800_000;
/// See [`MIN_MS`].
pub(crate) const MAX_MS: i64 = 253_402_300_799_999;

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

/// JSON values of every kind, nested a few levels, with strings (and object keys) drawn
/// from `text`.
pub(crate) fn json_value<S>(text: S) -> impl Strategy<Value = Value>
where
    S: Strategy<Value = String> + Clone + 'static,
{
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        text.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec((text.clone(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}
