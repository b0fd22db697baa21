//! Instants as whole Unix milliseconds: how the Redis codec and SQLite rows keep times.

use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, sub-millisecond parts dropped (rounded towards the
/// past, also before 1970). Whole seconds times a thousand, plus the milliseconds: no
/// 128-bit division, which `unix_timestamp_nanos` would need. Every `OffsetDateTime`
/// (years ±9999) is far inside `i64`'s range of milliseconds.
pub(crate) fn unix_millis(at: OffsetDateTime) -> i64 {
    at.unix_timestamp() * 1000 + i64::from(at.millisecond())
}

/// The instant `ms` Unix milliseconds name, if `time` can hold it.
pub(crate) fn from_unix_millis(ms: i64) -> Option<OffsetDateTime> {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    // `rem_euclid(1000)` is below 1000, so it is a valid millisecond and fits a u16.
    at.replace_millisecond(ms.rem_euclid(1000) as u16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{proptest_config, MAX_MS, MIN_MS};
    use proptest::prelude::*;

    #[test]
    fn millis_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 999, 1000, 1_700_000_000_123, -1, -999, -1000, -1001] {
            let at = from_unix_millis(ms).unwrap();
            assert_eq!(
                at,
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
            );
            assert_eq!(unix_millis(at), ms);
        }
        let now = OffsetDateTime::now_utc();
        let whole_ms = now.unix_timestamp_nanos() / 1_000_000;
        assert_eq!(
            i128::from(unix_millis(now)),
            whole_ms,
            "sub-millisecond parts are dropped"
        );
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let back = from_unix_millis(unix_millis(at)).unwrap();
        assert_eq!(back.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(unix_millis(before_epoch), -2, "rounded towards the past");
        assert_eq!(
            from_unix_millis(i64::MAX),
            None,
            "beyond what time can hold"
        );
    }

    // Property tests: any whole number reads as the instant `time` names or as out of
    // range, never a panic; and an instant reads back to the millisecond.
    proptest! {
        #![proptest_config(proptest_config(512))]

        #[test]
        fn millis_name_the_instant_time_does(
            ms in prop_oneof![
                any::<i64>(),
                MIN_MS - 2_000..MIN_MS + 2_000,
                MAX_MS - 2_000..MAX_MS + 2_000,
                -5_000i64..5_000,
            ],
        ) {
            let expected =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
            let at = from_unix_millis(ms);
            prop_assert_eq!(at, expected);
            prop_assert_eq!(at.is_some(), (MIN_MS..=MAX_MS).contains(&ms));
            if let Some(at) = at {
                prop_assert_eq!(unix_millis(at), ms);
            }
        }

        #[test]
        fn instants_read_back_to_the_millisecond(
            nanos in i128::from(MIN_MS) * 1_000_000..=i128::from(MAX_MS) * 1_000_000 + 999_999,
        ) {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let back = from_unix_millis(unix_millis(at)).unwrap();
            prop_assert_eq!(back.unix_timestamp_nanos(), nanos.div_euclid(1_000_000) * 1_000_000);
        }
    }
}
