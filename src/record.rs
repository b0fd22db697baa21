//! What a store keeps for a session ([`Record`]), what a request changed ([`Delta`]), and
//! what operators see of a session ([`SessionInfo`]).
//!
//! Session data is a JSON object ([`SessionData`]): keys the current code does not know
//! survive untouched, a missing key reads as `None`, and each value's type is checked only
//! when a handler asks for it, so a change of shape in one key never breaks the others.
//!
//! ```
//! use sessionware::{Delta, Record};
//! use time::{Duration, OffsetDateTime};
//!
//! let now = OffsetDateTime::now_utc();
//! let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
//! record.data.insert("theme".into(), "dark".into());
//!
//! let mut delta = Delta::default();
//! delta.set("count", 1.into());
//! delta.remove("theme");
//! delta.apply_to(&mut record);
//! assert_eq!(record.data.get("count"), Some(&1.into()));
//! assert!(record.data.get("theme").is_none());
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::data::SessionData;
use crate::id::IdHash;

/// A session as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The session's data: one JSON value per key.
    #[serde(default)]
    pub data: SessionData,
    /// The authenticated user, if any. Stores index sessions by it.
    #[serde(default)]
    pub user_id: Option<String>,
    /// When the session began (reset at login, which starts a new authenticated session).
    #[serde(with = "time::serde::timestamp::milliseconds")]
    pub created_at: OffsetDateTime,
    /// When the session was last used, to the precision of its idle refresh step.
    #[serde(with = "time::serde::timestamp::milliseconds")]
    pub last_seen: OffsetDateTime,
    /// The session ends if not used again before this instant.
    #[serde(with = "time::serde::timestamp::milliseconds")]
    pub idle_deadline: OffsetDateTime,
    /// The session ends at this instant however much it is used.
    #[serde(with = "time::serde::timestamp::milliseconds")]
    pub absolute_deadline: OffsetDateTime,
    /// Whether the longer remember-me timeouts apply.
    #[serde(default)]
    pub remember_me: bool,
    /// The client's IP address when the session was created, for "your devices" lists.
    #[serde(default)]
    pub ip: Option<String>,
    /// The client's `User-Agent` when the session was created (truncated).
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl Record {
    /// An empty, anonymous session created at `now` with the given deadlines.
    pub fn new(
        now: OffsetDateTime,
        idle_deadline: OffsetDateTime,
        absolute_deadline: OffsetDateTime,
    ) -> Self {
        Self {
            data: SessionData::new(),
            user_id: None,
            created_at: now,
            last_seen: now,
            idle_deadline,
            absolute_deadline,
            remember_me: false,
            ip: None,
            user_agent: None,
        }
    }

    /// The instant the session ends unless used again: the earlier of its two deadlines.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.idle_deadline.min(self.absolute_deadline)
    }

    /// Whether the session has ended by `now`. Stores treat such a record as absent.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at()
    }

    /// What an operator sees of this session, filed under `key`.
    pub fn info(&self, key: IdHash) -> SessionInfo {
        SessionInfo {
            key,
            user_id: self.user_id.clone(),
            created_at: self.created_at,
            last_seen: self.last_seen,
            expires_at: self.expires_at(),
            remember_me: self.remember_me,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// New deadlines for a session, written together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadlines {
    /// The new idle deadline.
    pub idle: OffsetDateTime,
    /// The new absolute deadline.
    pub absolute: OffsetDateTime,
    /// Whether remember-me timeouts apply from now on.
    pub remember_me: bool,
}

impl Deadlines {
    /// Deadlines from their parts.
    pub fn new(idle: OffsetDateTime, absolute: OffsetDateTime, remember_me: bool) -> Self {
        Self {
            idle,
            absolute,
            remember_me,
        }
    }

    /// The earlier of the two deadlines.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.idle.min(self.absolute)
    }
}

/// What one request changed in a session: the only thing written back.
///
/// Stores apply a delta atomically and only to a record that still exists, which is what
/// lets concurrent requests on one session each keep their own changes, and what stops a
/// request still in flight from resurrecting a session another request ended.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Delta {
    /// Remove every data key before applying `changes`.
    pub clear: bool,
    /// Per key: `Some(value)` to set it, `None` to remove it. Applied after `clear`.
    pub changes: BTreeMap<String, Option<Value>>,
    /// `Some(new)` to change the authenticated user (`Some(None)` to clear it).
    pub user_id: Option<Option<String>>,
    /// New deadlines, when this request extended or changed them.
    pub deadlines: Option<Deadlines>,
    /// A new `last_seen`, written along with anything else this delta writes.
    pub last_seen: Option<OffsetDateTime>,
    /// A new creation time (set when a login starts a new authenticated session).
    pub created_at: Option<OffsetDateTime>,
}

impl Delta {
    /// Records that `key` is set to `value`.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        self.changes.insert(key.into(), Some(value));
    }

    /// Records that `key` is removed.
    pub fn remove(&mut self, key: impl Into<String>) {
        self.changes.insert(key.into(), None);
    }

    /// Records that every key is removed (and forgets earlier per-key changes).
    pub fn clear_data(&mut self) {
        self.clear = true;
        self.changes.clear();
    }

    /// Whether this delta changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear
            && self.changes.is_empty()
            && self.user_id.is_none()
            && self.deadlines.is_none()
            && self.last_seen.is_none()
            && self.created_at.is_none()
    }

    /// Whether this delta changes data or the user, as opposed to only `last_seen` and
    /// the deadlines (which a sliding-expiry refresh moves, and a remember-me switch too).
    pub fn changes_content(&self) -> bool {
        self.clear || !self.changes.is_empty() || self.user_id.is_some()
    }

    /// Keys the delta sets, with their values.
    pub fn sets(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.changes
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|value| (key.as_str(), value)))
    }

    /// Keys the delta removes.
    pub fn removals(&self) -> impl Iterator<Item = &str> {
        self.changes
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.as_str())
    }

    /// Applies this delta to a record in place: the reference semantics every store must
    /// match.
    pub fn apply_to(&self, record: &mut Record) {
        if self.clear {
            record.data.clear();
        }
        for (key, change) in &self.changes {
            match change {
                Some(value) => {
                    record.data.insert(key.clone(), value.clone());
                }
                None => {
                    record.data.remove(key);
                }
            }
        }
        if let Some(user_id) = &self.user_id {
            record.user_id.clone_from(user_id);
        }
        if let Some(deadlines) = self.deadlines {
            record.idle_deadline = deadlines.idle;
            record.absolute_deadline = deadlines.absolute;
            record.remember_me = deadlines.remember_me;
        }
        if let Some(last_seen) = self.last_seen {
            record.last_seen = last_seen;
        }
        if let Some(created_at) = self.created_at {
            record.created_at = created_at;
        }
    }
}

/// What an operator sees of one session: enough for a "your devices" list and to revoke
/// one of them, and nothing a client could present as a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's store key: pass it to
    /// [`SessionStore::delete`](crate::SessionStore::delete) to revoke this session.
    #[serde(serialize_with = "serialize_display")]
    pub key: IdHash,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// When the session began.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used, to the precision of the idle refresh step.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// When it ends unless used again.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Whether remember-me timeouts apply.
    pub remember_me: bool,
    /// The client's IP address at creation, if known.
    pub ip: Option<String>,
    /// The client's `User-Agent` at creation, if known.
    pub user_agent: Option<String>,
}

fn serialize_display<S: serde::Serializer>(key: &IdHash, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn record() -> Record {
        let now = OffsetDateTime::now_utc();
        Record::new(now, now + Duration::minutes(30), now + Duration::hours(12))
    }

    #[test]
    fn expiry_is_the_earlier_deadline() {
        let mut r = record();
        assert_eq!(r.expires_at(), r.idle_deadline);
        r.absolute_deadline = r.created_at + Duration::minutes(1);
        assert_eq!(r.expires_at(), r.absolute_deadline);
        assert!(!r.is_expired(r.created_at));
        assert!(r.is_expired(r.absolute_deadline));
    }

    #[test]
    fn clear_then_set_keeps_only_the_new_keys() {
        let mut r = record();
        r.data.insert("a".into(), 1.into());
        r.data.insert("b".into(), 2.into());
        let mut delta = Delta::default();
        delta.set("a", 9.into());
        delta.clear_data();
        delta.set("c", 3.into());
        delta.apply_to(&mut r);
        assert_eq!(r.data.len(), 1);
        assert_eq!(r.data["c"], 3);
        assert!(delta.changes_content());
    }

    #[test]
    fn last_change_to_a_key_wins_within_a_delta() {
        let mut delta = Delta::default();
        delta.set("k", 1.into());
        delta.remove("k");
        assert_eq!(delta.sets().count(), 0);
        assert_eq!(delta.removals().collect::<Vec<_>>(), ["k"]);
        delta.set("k", 2.into());
        assert_eq!(delta.sets().collect::<Vec<_>>(), [("k", &2.into())]);
    }

    #[test]
    fn refresh_only_delta_is_not_content() {
        let mut delta = Delta::default();
        assert!(delta.is_empty());
        delta.last_seen = Some(OffsetDateTime::now_utc());
        assert!(!delta.is_empty());
        assert!(!delta.changes_content());
    }

    #[test]
    fn identity_and_deadlines_apply() {
        let mut r = record();
        let later = r.created_at + Duration::days(30);
        let delta = Delta {
            user_id: Some(Some("alice".into())),
            deadlines: Some(Deadlines::new(later, later, true)),
            ..Delta::default()
        };
        delta.apply_to(&mut r);
        assert_eq!(r.user_id.as_deref(), Some("alice"));
        assert!(r.remember_me);
        assert_eq!(r.expires_at(), later);
        let logout = Delta {
            user_id: Some(None),
            ..Delta::default()
        };
        logout.apply_to(&mut r);
        assert_eq!(r.user_id, None);
    }

    #[test]
    fn unknown_fields_and_missing_optionals_decode() {
        let json = r#"{"data":{"x":1},"created_at":0,"last_seen":0,
            "idle_deadline":1000,"absolute_deadline":2000,"future_field":true}"#;
        let r: Record = serde_json::from_str(json).unwrap();
        assert_eq!(r.data["x"], 1);
        assert_eq!(r.user_id, None);
        assert_eq!(r.expires_at().unix_timestamp(), 1);
    }
}
