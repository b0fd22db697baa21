//! How a [`Record`] maps onto the fields of a Redis hash, and back.
//!
//! | field | holds |
//! |---|---|
//! | `d:<key>` | the JSON of data key `<key>` |
//! | `m` | the times and the remember-me flag, packed: `c:l:i:a:r` (see below) |
//! | `u` | the user ID (absent for an anonymous session) |
//! | `ip`, `ua` | the client's IP address and `User-Agent` at creation |
//!
//! In `m`, `c`, `l`, `i` and `a` are the creation time, last seen time, idle deadline and
//! absolute deadline in Unix milliseconds, and `r` is `1` for remember-me, else `0`. They
//! share one field because every read returns every field: each field is two more values
//! for Redis to send and for the client to parse, and parsing reply values is the largest
//! single cost of a load on the application server (see BENCHMARKS.md).
//!
//! Fields this version does not know are ignored, so a newer writer that adds fields does
//! not break an older reader. The layout changed once before the first release: the times
//! had a field each (`c`, `l`, `i`, `a`, `r`); a hash in that layout has no `m` and reads
//! as corrupt (logged, treated as no session).

use redis::{Cmd, Value};
use time::OffsetDateTime;

use crate::error::Error;
use crate::millis::{from_unix_millis, unix_millis};
use crate::record::{Delta, Record};

/// The prefix of a data field: what follows it is the session key.
const DATA: &[u8] = b"d:";
/// The field that packs the times and the remember-me flag.
const META: &[u8] = b"m";
/// The separator of `META`'s parts.
const SEP: char = ':';
/// The other fields, in the order `decode` keeps them.
const INFO_FIELDS: [&str; 3] = ["u", "ip", "ua"];

/// A hash's fields as raw name/value pairs.
pub(super) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A whole number as the scripts' pattern reads it: an optional minus, then one or more
/// ASCII digits (no `+`, no spaces), within `i64`.
fn whole_number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: i64 = 0;
    for &byte in digits {
        let digit = byte.checked_sub(b'0').filter(|d| *d <= 9)?;
        // Accumulated negatively, so that i64::MIN itself parses.
        magnitude = magnitude.checked_mul(10)?.checked_sub(i64::from(digit))?;
    }
    if negative {
        Some(magnitude)
    } else {
        magnitude.checked_neg()
    }
}

fn instant(field: &str, text: Option<&[u8]>) -> Result<OffsetDateTime, String> {
    let text = text.ok_or_else(|| format!("missing field {field:?}"))?;
    let ms = whole_number(text).ok_or_else(|| format!("field {field:?} is not a whole number"))?;
    from_unix_millis(ms).ok_or_else(|| format!("field {field:?} is out of range"))
}

fn text(field: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("field {field:?} is not UTF-8"))
}

/// Appends the field/value pairs that file `record` to a script call, as `HSET`
/// arguments: straight into the command, as the layer creates a session per new visitor.
pub(super) fn push_record(cmd: &mut Cmd, record: &Record) -> Result<(), Error> {
    for (key, value) in &record.data {
        cmd.arg(data_field(key))
            .arg(serde_json::to_vec(value).map_err(Error::serialize)?);
    }
    let times = [
        record.created_at,
        record.last_seen,
        record.idle_deadline,
        record.absolute_deadline,
    ];
    cmd.arg(META)
        .arg(pack_times(times.map(Some), Some(record.remember_me)));
    let info = [&record.user_id, &record.ip, &record.user_agent];
    for (name, value) in INFO_FIELDS.iter().zip(info) {
        if let Some(value) = value {
            cmd.arg(*name).arg(value.as_str());
        }
    }
    Ok(())
}

/// Text in `m`'s layout: created, last seen, idle and absolute deadlines (Unix ms), then
/// the remember-me flag, each part empty when `None`.
fn pack_times(times: [Option<OffsetDateTime>; 4], remember_me: Option<bool>) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    for time in times {
        if let Some(time) = time {
            let _ = write!(text, "{}", unix_millis(time)); // writing to a String cannot fail
        }
        text.push(SEP);
    }
    text.push_str(remember_me.map_or("", flag));
    text
}

/// What an `m` field holds.
struct Times {
    created: OffsetDateTime,
    last_seen: OffsetDateTime,
    idle: OffsetDateTime,
    absolute: OffsetDateTime,
    remember_me: bool,
}

/// The parts of an `m` field, in the order [`pack_times`] writes them.
fn unpack_meta(text: Option<&[u8]>) -> Result<Times, String> {
    let text = text.ok_or("missing field \"m\"")?;
    let mut parts = text.split(|byte| *byte == SEP as u8);
    let mut next = |name: &'static str| instant(name, parts.next());
    let (created, last_seen) = (next("m.created")?, next("m.last_seen")?);
    let (idle, absolute) = (next("m.idle")?, next("m.absolute")?);
    let remember_me = match (parts.next(), parts.next()) {
        (Some(b"1"), None) => true,
        (Some(b"0"), None) => false,
        _ => return Err("field \"m\" does not end in a remember-me flag".into()),
    };
    Ok(Times {
        created,
        last_seen,
        idle,
        absolute,
        remember_me,
    })
}

fn data_field(key: &str) -> Vec<u8> {
    [DATA, key.as_bytes()].concat()
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// Appends `delta` to a script call in the layout `apply_delta` in lua.rs reads: what the
/// script decides on (the user; the times, from which it works out the new expiry: see
/// [`changed_times`]), then every field to delete and every field/value pair to set, so
/// that the script writes them with one `HDEL` and one `HSET`.
pub(super) fn push_delta(cmd: &mut Cmd, delta: &Delta) -> Result<(), Error> {
    cmd.arg(flag(delta.clear));
    match &delta.user_id {
        None => cmd.arg("").arg(""),
        Some(Some(user)) => cmd.arg("s").arg(user.as_str()),
        Some(None) => cmd.arg("c").arg(""),
    };
    cmd.arg(changed_times(delta));
    let clears_user = matches!(delta.user_id, Some(None));
    cmd.arg(delta.removals().count() + usize::from(clears_user));
    if clears_user {
        cmd.arg("u");
    }
    for key in delta.removals() {
        cmd.arg(data_field(key));
    }
    if let Some(Some(user)) = &delta.user_id {
        cmd.arg("u").arg(user.as_str());
    }
    for (key, value) in delta.sets() {
        cmd.arg(data_field(key))
            .arg(serde_json::to_vec(value).map_err(Error::serialize)?);
    }
    Ok(())
}

/// The parts of `m` that `delta` changes, in `m`'s layout with each unchanged part empty
/// (the script merges them into the stored ones, and takes the new expiry from the
/// deadlines, which move together), or `""` when it changes none: the common write then
/// costs the script one empty argument.
fn changed_times(delta: &Delta) -> String {
    if delta.created_at.is_none() && delta.last_seen.is_none() && delta.deadlines.is_none() {
        return String::new();
    }
    let times = [
        delta.created_at,
        delta.last_seen,
        delta.deadlines.map(|d| d.idle),
        delta.deadlines.map(|d| d.absolute),
    ];
    pack_times(times, delta.deadlines.map(|d| d.remember_me))
}

/// A record from a hash's fields; the reason it is corrupt otherwise.
pub(super) fn decode(fields: Fields) -> Result<Record, String> {
    let mut data = Vec::new();
    let mut meta = None;
    let mut info: [Option<Vec<u8>>; INFO_FIELDS.len()] = Default::default();
    for (mut name, value) in fields {
        if name.starts_with(DATA) {
            // The key is the rest of the name: reuse its buffer rather than copy it.
            name.drain(..DATA.len());
            let key = text("data key", name)?;
            let value = serde_json::from_slice(&value)
                .map_err(|err| format!("data key {key:?} is not JSON: {err}"))?;
            data.push((key, value));
        } else if name == META {
            meta = Some(value);
        } else if let Some(slot) = INFO_FIELDS.iter().position(|m| m.as_bytes() == name) {
            info[slot] = Some(value);
        }
    }
    let times = unpack_meta(meta.as_deref())?;
    let [user, ip, agent] = info;
    let mut record = Record::new(times.created, times.idle, times.absolute);
    record.data = data.into_iter().collect();
    record.last_seen = times.last_seen;
    record.user_id = user.map(|u| text("u", u)).transpose()?;
    record.remember_me = times.remember_me;
    record.ip = ip.map(|ip| text("ip", ip)).transpose()?;
    record.user_agent = agent.map(|ua| text("ua", ua)).transpose()?;
    Ok(record)
}

/// The name/value pairs of a hash reply: a map (RESP3) or a flat array (RESP2, and what a
/// script returns). `None` if the reply has another shape.
pub(super) fn pairs(value: Value) -> Option<Fields> {
    let bytes = |value: Value| match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    };
    match value {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(name, value)| Some((bytes(name)?, bytes(value)?)))
            .collect(),
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut items = items.into_iter();
            let mut fields = Vec::with_capacity(items.len() / 2);
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                fields.push((bytes(name)?, bytes(value)?));
            }
            Some(fields)
        }
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::Duration;

    fn sample() -> Record {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
        record.data.insert("n".into(), json!({"deep": [1, "two"]}));
        record.data.insert(String::new(), json!("empty key"));
        record.user_id = Some("Zoë".into());
        record.remember_me = true;
        record.ip = Some("203.0.113.9".into());
        record
    }

    /// The field/value pairs `push_record` appends, read back from the command.
    fn record_fields(record: &Record) -> Result<Fields, Error> {
        let mut cmd = Cmd::new();
        push_record(&mut cmd, record)?;
        let mut args = cmd.args_iter().map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => panic!("a record's arguments are plain bytes"),
        });
        let mut fields = Vec::new();
        while let (Some(name), Some(value)) = (args.next(), args.next()) {
            fields.push((name, value));
        }
        Ok(fields)
    }

    #[test]
    fn fields_round_trip() {
        let record = sample();
        let fields = record_fields(&record).unwrap();
        assert_eq!(decode(fields).unwrap(), record);
    }

    #[test]
    fn corrupt_fields_are_reported() {
        let mut fields = record_fields(&sample()).unwrap();
        fields.retain(|(name, _)| name != b"m");
        assert!(decode(fields).unwrap_err().contains("\"m\""));

        let mut fields = record_fields(&sample()).unwrap();
        fields.push((b"d:bad".to_vec(), b"{not json".to_vec()));
        assert!(decode(fields).unwrap_err().contains("bad"));

        for bad in [
            "yesterday:1:2:3:0",
            "1:2:3:4",
            "1:2:3:4:yes",
            "1:2:3:4:0:5",
            "+1:2:3:4:0",
            "1:2:3:99999999999999999999:0",
        ] {
            let mut fields = record_fields(&sample()).unwrap();
            fields.retain(|(name, _)| name != b"m");
            fields.push((b"m".to_vec(), bad.as_bytes().to_vec()));
            assert!(decode(fields).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_pack_into_one_field_in_the_order_the_scripts_read() {
        let fields = record_fields(&sample()).unwrap();
        let names: Vec<&[u8]> = fields.iter().map(|(name, _)| name.as_slice()).collect();
        assert_eq!(names, [&b"d:"[..], b"d:n", b"m", b"u", b"ip"]);
        let (_, packed) = &fields[2];
        assert_eq!(
            std::str::from_utf8(packed).unwrap(),
            "1700000000000:1700000000000:1700001800000:1700043200000:1"
        );
    }

    #[test]
    fn a_delta_names_only_the_times_it_moves() {
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
        let mut delta = Delta::default();
        delta.set("n", json!(1));
        assert_eq!(changed_times(&delta), "", "a data-only write moves no time");
        delta.last_seen = Some(at(5).unwrap());
        assert_eq!(changed_times(&delta), ":5:::");
        delta.deadlines = Some(crate::Deadlines::new(at(7).unwrap(), at(9).unwrap(), true));
        delta.created_at = Some(at(-3).unwrap());
        assert_eq!(changed_times(&delta), "-3:5:7:9:1");
    }

    #[test]
    fn whole_numbers_read_as_the_scripts_pattern_does() {
        let read = |text: &str| whole_number(text.as_bytes());
        assert_eq!(read("0"), Some(0));
        assert_eq!(read("-0"), Some(0));
        assert_eq!(read("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(read("-42"), Some(-42));
        assert_eq!(read(&i64::MAX.to_string()), Some(i64::MAX));
        assert_eq!(read(&i64::MIN.to_string()), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "1e3",
            "--1",
            "9223372036854775808",
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats_in_data_read_back_exactly() {
        // Found by `a_written_record_reads_back_the_same`: serde_json's default parser may
        // land one unit in the last place off the value it wrote, so a session that saved
        // these read back different numbers. `float_roundtrip` makes parsing exact.
        let mut record = sample();
        for (key, x) in [
            ("a", -4.7462017919913614e190),
            ("b", 2.6504853308642592e-110),
        ] {
            record.data.insert(key.into(), json!(x));
        }
        let fields = record_fields(&record).unwrap();
        assert_eq!(decode(fields).unwrap(), record);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut fields = record_fields(&sample()).unwrap();
        fields.push((b"future".to_vec(), b"whatever".to_vec()));
        assert_eq!(decode(fields).unwrap(), sample());
    }

    #[test]
    fn replies_of_both_protocols_decode() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![bulk("u"), bulk("ann")]);
        let map = Value::Map(vec![(bulk("u"), bulk("ann"))]);
        let want = Some(vec![(b"u".to_vec(), b"ann".to_vec())]);
        assert_eq!(pairs(flat), want);
        assert_eq!(pairs(map), want);
        assert_eq!(pairs(Value::Array(vec![bulk("odd")])), None);
        assert_eq!(pairs(Value::Int(3)), None);
    }

    /// Property tests: whatever a hash holds (a record this crate wrote, that record
    /// damaged, or arbitrary bytes), decoding answers with a record or a reason, never a
    /// panic; and a record written and read back is the same record.
    mod properties {
        use super::*;
        use crate::test_support::{json_value, proptest_config, MAX_MS, MIN_MS};
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::{select, Index};

        /// Whole-millisecond instants across the whole range, with the epoch and the present
        /// (where the sign and the digit count change) weighted up.
        fn instant() -> impl Strategy<Value = OffsetDateTime> {
            prop_oneof![
                MIN_MS..=MAX_MS,
                -5_000i64..5_000,
                1_600_000_000_000i64..1_900_000_000_000,
                Just(MIN_MS),
                Just(MAX_MS),
            ]
            .prop_map(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
            })
        }

        prop_compose! {
            fn record()(
                times in [instant(), instant(), instant(), instant()],
                data in vec((any::<String>(), json_value(any::<String>())), 0..5),
                user_id in any::<Option<String>>(),
                remember_me in any::<bool>(),
                ip in any::<Option<String>>(),
                user_agent in any::<Option<String>>(),
            ) -> Record {
                let [created, last_seen, idle, absolute] = times;
                let mut record = Record::new(created, idle, absolute);
                record.last_seen = last_seen;
                record.data = data.into_iter().collect();
                record.user_id = user_id;
                record.remember_me = remember_me;
                record.ip = ip;
                record.user_agent = user_agent;
                record
            }
        }

        /// A way a stored hash goes bad: a field's name or value cut short, one of its
        /// bytes changed, a field lost, a field sent twice, or a stray field added. Which
        /// field and which byte are indices into whatever the hash holds by then.
        #[derive(Debug, Clone)]
        enum Damage {
            Truncate(Index, Part, Index),
            Flip(Index, Part, Index, u8),
            Drop(Index),
            Duplicate(Index),
            Add(Vec<u8>, Vec<u8>),
        }

        /// A field's name or its value.
        #[derive(Debug, Clone, Copy)]
        enum Part {
            Name,
            Value,
        }

        fn damage() -> impl Strategy<Value = Damage> {
            let part = prop_oneof![Just(Part::Name), Just(Part::Value)];
            prop_oneof![
                (any::<Index>(), part.clone(), any::<Index>())
                    .prop_map(|(field, part, keep)| Damage::Truncate(field, part, keep)),
                (any::<Index>(), part, any::<Index>(), 1u8..=255)
                    .prop_map(|(field, part, at, mask)| Damage::Flip(field, part, at, mask)),
                any::<Index>().prop_map(Damage::Drop),
                any::<Index>().prop_map(Damage::Duplicate),
                (field_name(), field_value()).prop_map(|(name, value)| Damage::Add(name, value)),
            ]
        }

        /// One of `fields` (which is not empty), its name or its value.
        fn bytes<'a>(fields: &'a mut Fields, field: &Index, part: Part) -> &'a mut Vec<u8> {
            let len = fields.len();
            let (name, value) = &mut fields[field.index(len)];
            match part {
                Part::Name => name,
                Part::Value => value,
            }
        }

        fn inflict(fields: &mut Fields, damage: &Damage) {
            if let Damage::Add(name, value) = damage {
                fields.push((name.clone(), value.clone()));
            }
            if fields.is_empty() {
                return;
            }
            match damage {
                Damage::Truncate(field, part, keep) => {
                    let bytes = bytes(fields, field, *part);
                    bytes.truncate(keep.index(bytes.len() + 1));
                }
                Damage::Flip(field, part, at, mask) => {
                    let bytes = bytes(fields, field, *part);
                    if !bytes.is_empty() {
                        let at = at.index(bytes.len());
                        bytes[at] ^= mask;
                    }
                }
                Damage::Drop(field) => {
                    fields.remove(field.index(fields.len()));
                }
                Damage::Duplicate(field) => {
                    let copy = fields[field.index(fields.len())].clone();
                    fields.push(copy);
                }
                Damage::Add(..) => {}
            }
        }

        /// Checks that a record `decode` returned survives being written and read again
        /// unchanged: whatever is accepted can be saved back without loss.
        fn rewrites_unchanged(record: &Record) -> Result<(), TestCaseError> {
            let again = decode(record_fields(record).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(record));
            Ok(())
        }

        /// Field names: the ones the codec knows, data fields, and anything else.
        fn field_name() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                2 => Just(META.to_vec()),
                2 => select(vec![&b"u"[..], b"ip", b"ua", b"d:", b"d", b""])
                    .prop_map(<[u8]>::to_vec),
                2 => prop_oneof![any::<String>().prop_map(String::into_bytes), vec(any::<u8>(), 0..12)]
                    .prop_map(|key| [DATA, &key].concat()),
                1 => vec(any::<u8>(), 0..12),
            ]
        }

        /// Field values: arbitrary bytes, JSON, and text in `m`'s shape with parts that are
        /// or nearly are whole numbers (signs, leading zeros, more digits than `i64` holds).
        fn field_value() -> impl Strategy<Value = Vec<u8>> {
            let part = prop_oneof![
                6 => "-?[0-9]{1,14}",
                1 => "[+-]{0,2}[0-9]{0,22}",
                1 => any::<String>(),
            ];
            let parts = prop_oneof![3 => vec(part.clone(), 4), 1 => vec(part, 3..=6)];
            let flag = prop_oneof![3 => "[01]", 1 => "[^:]{0,3}"];
            let meta = (parts, flag).prop_map(|(parts, flag)| {
                let mut text = parts.join(":");
                text.push(':');
                text.push_str(&flag);
                text.into_bytes()
            });
            prop_oneof![
                1 => vec(any::<u8>(), 0..40),
                2 => json_value(any::<String>()).prop_map(|value| serde_json::to_vec(&value).unwrap()),
                2 => meta,
            ]
        }

        proptest! {
            #![proptest_config(proptest_config(512))]

            #[test]
            fn a_written_record_reads_back_the_same(record in record()) {
                let fields = record_fields(&record).unwrap();
                prop_assert_eq!(decode(fields), Ok(record));
            }

            #[test]
            fn a_damaged_record_decodes_or_is_reported(
                record in record(),
                damages in vec(damage(), 1..4),
            ) {
                let mut fields = record_fields(&record).unwrap();
                for damage in &damages {
                    inflict(&mut fields, damage);
                }
                match decode(fields) {
                    Ok(decoded) => rewrites_unchanged(&decoded)?,
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }

            #[test]
            fn arbitrary_fields_decode_or_are_reported(
                fields in vec((field_name(), field_value()), 0..8),
            ) {
                match decode(fields) {
                    Ok(decoded) => rewrites_unchanged(&decoded)?,
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }

            #[test]
            fn whole_numbers_read_as_i64_parses_them_but_for_a_plus(
                text in prop_oneof![
                    vec(any::<u8>(), 0..24),
                    "[+-]{0,2}[0-9]{0,22}".prop_map(String::into_bytes),
                    any::<i64>().prop_map(|n| n.to_string().into_bytes()),
                ],
            ) {
                let expected = match text.first() {
                    Some(b'+') => None,
                    _ => std::str::from_utf8(&text).ok().and_then(|t| t.parse::<i64>().ok()),
                };
                prop_assert_eq!(whole_number(&text), expected, "{:?}", String::from_utf8_lossy(&text));
            }
        }
    }
}
