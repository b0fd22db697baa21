//! How a [`Record`] maps onto the fields of a Redis hash, and back.
//!
//! | field | holds |
//! |---|---|
//! | `d:<key>` | the JSON of data key `<key>` |
//! | `u` | the user ID (absent for an anonymous session) |
//! | `c`, `l` | created, last seen: Unix milliseconds |
//! | `i`, `a` | idle and absolute deadlines: Unix milliseconds |
//! | `r` | `1` for remember-me, else `0` |
//! | `ip`, `ua` | the client's IP address and `User-Agent` at creation |
//!
//! Fields this version does not know are ignored, so a newer writer does not break an
//! older reader.

use redis::{Cmd, Value};
use time::OffsetDateTime;

use crate::error::Error;
use crate::record::{Delta, Record};

/// The prefix of a data field: what follows it is the session key.
const DATA: &[u8] = b"d:";
/// The meta fields, in the order `decode` keeps them.
const META_FIELDS: [&str; 8] = ["u", "c", "l", "i", "a", "r", "ip", "ua"];

/// A hash's fields as raw name/value pairs.
pub(super) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Unix milliseconds, saturating far outside any real deadline.
pub(super) fn millis(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn instant(field: &str, text: Option<&[u8]>) -> Result<OffsetDateTime, String> {
    let text = text.ok_or_else(|| format!("missing field {field:?}"))?;
    let ms: i64 = std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("field {field:?} is not a whole number"))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| format!("field {field:?} is out of range"))
}

fn text(field: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("field {field:?} is not UTF-8"))
}

/// The field/value pairs that file `record`, as `HSET` arguments.
pub(super) fn record_fields(record: &Record) -> Result<Fields, Error> {
    let mut fields = Vec::with_capacity(record.data.len() + 8);
    for (key, value) in &record.data {
        fields.push((
            data_field(key),
            serde_json::to_vec(value).map_err(Error::serialize)?,
        ));
    }
    let mut meta = |name: &str, value: String| fields.push((name.into(), value.into_bytes()));
    meta("c", millis(record.created_at).to_string());
    meta("l", millis(record.last_seen).to_string());
    meta("i", millis(record.idle_deadline).to_string());
    meta("a", millis(record.absolute_deadline).to_string());
    meta("r", flag(record.remember_me).to_owned());
    if let Some(user) = &record.user_id {
        meta("u", user.clone());
    }
    if let Some(ip) = &record.ip {
        meta("ip", ip.clone());
    }
    if let Some(agent) = &record.user_agent {
        meta("ua", agent.clone());
    }
    Ok(fields)
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
/// script decides on (the user, the new expiry), then every field to delete and every
/// field/value pair to set, meta fields included, so that the script writes them with one
/// `HDEL` and one `HSET` and converts no number it does not compare.
pub(super) fn push_delta(cmd: &mut Cmd, delta: &Delta) -> Result<(), Error> {
    cmd.arg(flag(delta.clear));
    match &delta.user_id {
        None => cmd.arg("").arg(""),
        Some(Some(user)) => cmd.arg("s").arg(user.as_str()),
        Some(None) => cmd.arg("c").arg(""),
    };
    match &delta.deadlines {
        Some(deadlines) => {
            let (idle, absolute) = (millis(deadlines.idle), millis(deadlines.absolute));
            cmd.arg(idle.min(absolute)).arg(absolute)
        }
        None => cmd.arg("").arg(""),
    };
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
    if let Some(deadlines) = &delta.deadlines {
        cmd.arg("i")
            .arg(millis(deadlines.idle))
            .arg("a")
            .arg(millis(deadlines.absolute))
            .arg("r")
            .arg(flag(deadlines.remember_me));
    }
    if let Some(seen) = delta.last_seen {
        cmd.arg("l").arg(millis(seen));
    }
    if let Some(created) = delta.created_at {
        cmd.arg("c").arg(millis(created));
    }
    for (key, value) in delta.sets() {
        cmd.arg(data_field(key))
            .arg(serde_json::to_vec(value).map_err(Error::serialize)?);
    }
    Ok(())
}

/// A record from a hash's fields; the reason it is corrupt otherwise.
pub(super) fn decode(fields: Fields) -> Result<Record, String> {
    let mut data = Vec::new();
    let mut meta: [Option<Vec<u8>>; META_FIELDS.len()] = Default::default();
    for (name, value) in fields {
        if let Some(key) = name.strip_prefix(DATA) {
            let key = text("data key", key.to_vec())?;
            let value = serde_json::from_slice(&value)
                .map_err(|err| format!("data key {key:?} is not JSON: {err}"))?;
            data.push((key, value));
        } else if let Some(slot) = META_FIELDS.iter().position(|m| m.as_bytes() == name) {
            meta[slot] = Some(value);
        }
    }
    let [user, created, seen, idle, absolute, remember, ip, agent] = meta;
    let created_at = instant("c", created.as_deref())?;
    let mut record = Record::new(
        created_at,
        instant("i", idle.as_deref())?,
        instant("a", absolute.as_deref())?,
    );
    record.data = data.into_iter().collect();
    record.last_seen = instant("l", seen.as_deref())?;
    record.user_id = user.map(|u| text("u", u)).transpose()?;
    record.remember_me = remember.as_deref() == Some(b"1");
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

    #[test]
    fn fields_round_trip() {
        let record = sample();
        let fields = record_fields(&record).unwrap();
        assert_eq!(decode(fields).unwrap(), record);
    }

    #[test]
    fn corrupt_fields_are_reported() {
        let mut fields = record_fields(&sample()).unwrap();
        fields.retain(|(name, _)| name != b"i");
        assert!(decode(fields).unwrap_err().contains("\"i\""));

        let mut fields = record_fields(&sample()).unwrap();
        fields.push((b"d:bad".to_vec(), b"{not json".to_vec()));
        assert!(decode(fields).unwrap_err().contains("bad"));

        let mut fields = record_fields(&sample()).unwrap();
        fields.push((b"c".to_vec(), b"yesterday".to_vec()));
        assert!(decode(fields).is_err());
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
}
