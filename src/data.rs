//! [`SessionData`]: a session's keys and their JSON values, stored compactly.

use std::fmt;
use std::ops::Index;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A session's data: one JSON value per key, kept in key order. It serializes as a JSON
/// object.
///
/// A sorted vector rather than a tree or a hash map: a session holds a handful of keys
/// and a store keeps one of these per session, so the bytes per key decide the store's
/// memory (a `BTreeMap` allocates a 640-byte node for the first key; this allocates 56
/// bytes per key). Lookups are binary searches; an insert shifts the keys after it.
///
/// ```
/// use sessionware::SessionData;
///
/// let mut data = SessionData::new();
/// data.insert("theme".into(), "dark".into());
/// data.insert("count".into(), 1.into());
/// assert_eq!(data.get("count"), Some(&1.into()));
/// assert_eq!(data.keys().collect::<Vec<_>>(), ["count", "theme"]);
/// assert_eq!(serde_json::to_string(&data).unwrap(), r#"{"count":1,"theme":"dark"}"#);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct SessionData {
    /// Sorted by key, no key twice.
    entries: Vec<(String, Value)>,
}

impl SessionData {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).ok().map(|at| &self.entries[at].1)
    }

    /// The value of `key`, to change in place, if set.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let at = self.position(key).ok()?;
        Some(&mut self.entries[at].1)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                // Grow by one at a time while small: most sessions never outgrow a few
                // keys, and a store keeps the spare capacity for the session's life.
                if self.entries.len() == self.entries.capacity() && self.entries.len() < 8 {
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(at, (key, value));
                None
            }
        }
    }

    /// Unsets `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.position(key).ok()?;
        Some(self.entries.remove(at).1)
    }

    /// Unsets every key.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The keys and their values, in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            entries: self.entries.iter(),
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.entries.iter().map(|(key, _)| key.as_str())
    }

    /// The values, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.iter().map(|(_, value)| value)
    }
}

impl From<Map<String, Value>> for SessionData {
    fn from(map: Map<String, Value>) -> Self {
        map.into_iter().collect()
    }
}

impl From<SessionData> for Map<String, Value> {
    fn from(data: SessionData) -> Self {
        data.into_iter().collect()
    }
}

impl From<SessionData> for Value {
    /// The data as a JSON object.
    fn from(data: SessionData) -> Self {
        Value::Object(data.into())
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The keys and values of a [`SessionData`], in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    entries: std::slice::Iter<'a, (String, Value)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries
            .next()
            .map(|(key, value)| (key.as_str(), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries
            .next_back()
            .map(|(key, value)| (key.as_str(), value))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a SessionData {
    type Item = (&'a str, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for SessionData {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    /// The keys and values, in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for SessionData {
    /// Where a key comes twice, the later value wins.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Self {
        let mut entries: Vec<(String, Value)> =
            pairs.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // A stable sort keeps repeated keys in arrival order, so keeping the last of each
        // run keeps the later value.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut unique: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match unique.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => unique.push(entry),
            }
        }
        unique.shrink_to_fit();
        Self { entries: unique }
    }
}

impl Index<&str> for SessionData {
    type Output = Value;

    /// The value of `key`.
    ///
    /// # Panics
    /// If `key` is not set (use [`get`](SessionData::get) when it may not be).
    fn index(&self, key: &str) -> &Value {
        self.get(key)
            .unwrap_or_else(|| panic!("session data has no key {key:?}"))
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;

        impl<'de> Visitor<'de> for Object {
            type Value = SessionData;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionData, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }

        deserializer.deserialize_map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut data = SessionData::new();
        for key in ["m", "a", "z", "b", "a"] {
            data.insert(key.into(), json!(key));
        }
        data.insert("a".into(), json!("again"));
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a", "b", "m", "z"]);
        assert_eq!(data["a"], "again");
        assert_eq!(data.remove("m"), Some(json!("m")));
        assert_eq!(data.remove("m"), None);
        assert!(!data.contains_key("m") && data.contains_key("z"));
        assert_eq!(data.len(), 3);
        data.clear();
        assert!(data.is_empty() && data.get("a").is_none());
    }

    #[test]
    fn converts_to_and_from_a_json_object() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"b":2,"a":{"x":[1]}}"#).expect("a JSON object");
        let mut data = SessionData::from(map.clone());
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(Map::from(data.clone()), map);
        *data.get_mut("b").expect("b is set") = json!(3);
        assert!(data.get_mut("c").is_none());
        assert_eq!(
            data.values().collect::<Vec<_>>(),
            [&json!({"x": [1]}), &json!(3)]
        );
        assert_eq!(Value::from(data), json!({"a": {"x": [1]}, "b": 3}));
    }

    #[test]
    fn insert_reports_the_value_it_replaced() {
        let mut data = SessionData::new();
        assert_eq!(data.insert("k".into(), json!(1)), None);
        assert_eq!(data.insert("k".into(), json!(2)), Some(json!(1)));
        assert_eq!(data.get("k"), Some(&json!(2)));
    }

    #[test]
    fn small_data_holds_no_spare_capacity() {
        let mut data = SessionData::new();
        for n in 0..5 {
            data.insert(format!("k{n}"), json!(n));
            assert_eq!(data.entries.capacity(), data.len());
        }
    }

    #[test]
    fn serializes_as_a_json_object_and_back() {
        let data: SessionData =
            serde_json::from_str(r#"{"b":[1,{"x":null}],"a":"é","":0}"#).expect("a JSON object");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["", "a", "b"]);
        assert_eq!(data["b"], json!([1, {"x": null}]));
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(text, r#"{"":0,"a":"é","b":[1,{"x":null}]}"#);
        let again: SessionData = serde_json::from_str(&text).unwrap();
        assert_eq!(again, data);
    }

    #[test]
    fn floats_survive_the_text_form_exactly() {
        // SQLite keeps data in this text form and Redis each value in it. serde_json's
        // default parser may read a float one unit in the last place off what it wrote;
        // the `float_roundtrip` feature makes it exact.
        let data: SessionData = [
            ("a", json!(-4.7462017919913614e190)),
            ("b", json!(2.6504853308642592e-110)),
        ]
        .into_iter()
        .collect();
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(serde_json::from_str::<SessionData>(&text).unwrap(), data);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let data: SessionData = serde_json::from_str(r#"{"k":1,"j":0,"k":2}"#).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["k"], 2);
        let collected: SessionData = [("k", json!(1)), ("k", json!(3))].into_iter().collect();
        assert_eq!(collected["k"], 3);
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for text in ["[]", "1", "\"x\"", "null"] {
            assert!(serde_json::from_str::<SessionData>(text).is_err(), "{text}");
        }
    }

    #[test]
    #[should_panic(expected = "session data has no key \"missing\"")]
    fn indexing_a_missing_key_panics_with_its_name() {
        let _ = &SessionData::new()["missing"];
    }
}

/// Property tests: SQLite keeps a session's data as this text, so whatever text a row
/// holds reads as the object it is, or fails; never a panic, and never other data.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::test_support::{json_value, proptest_config};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    /// Keys from a small set, so that objects often repeat one.
    fn key() -> impl Strategy<Value = String> + Clone {
        prop_oneof![
            3 => select(vec!["", "a", "b", "user", "\u{0}", "é"]).prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    /// An object's entries, repeated keys included, as JSON text.
    fn object_text() -> impl Strategy<Value = String> {
        vec((key(), json_value(key())), 0..6).prop_map(|entries| {
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// What a data column might hold: objects, other JSON, arbitrary text, and objects cut
    /// short or with a character changed or put in.
    fn column_text() -> impl Strategy<Value = String> {
        let damaged = (
            object_text(),
            any::<Index>(),
            prop_oneof![
                Just(None),
                any::<char>().prop_map(Some),
                select(vec![Some('{'), Some('"'), Some(':'), Some(','), Some('\\')])
            ],
            any::<bool>(),
        )
            .prop_map(|(text, at, put, replace)| {
                let mut chars: Vec<char> = text.chars().collect();
                let at = at.index(chars.len() + 1);
                match put {
                    None => chars.truncate(at),
                    Some(c) if replace && at < chars.len() => chars[at] = c,
                    Some(c) => chars.insert(at, c),
                }
                chars.into_iter().collect()
            });
        prop_oneof![
            object_text(),
            json_value(key()).prop_map(|value| value.to_string()),
            any::<String>(),
            damaged,
        ]
    }

    proptest! {
        #![proptest_config(proptest_config(512))]

        #[test]
        fn column_text_reads_as_its_object_or_fails(text in column_text()) {
            let read = serde_json::from_str::<SessionData>(&text);
            match serde_json::from_str::<Value>(&text) {
                // serde_json's own map keeps the last of a repeated key, as data does.
                Ok(Value::Object(map)) => prop_assert_eq!(read.ok(), Some(SessionData::from(map))),
                _ => prop_assert!(read.is_err(), "{:?} read as {:?}", text, read),
            }
        }

        #[test]
        fn data_reads_back_from_its_text_unchanged(
            entries in vec((any::<String>(), json_value(any::<String>())), 0..6),
        ) {
            let data: SessionData = entries.into_iter().collect();
            let text = serde_json::to_string(&data).unwrap();
            prop_assert_eq!(serde_json::from_str::<SessionData>(&text).ok(), Some(data));
        }
    }
}
