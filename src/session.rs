//! [`Session`]: a handler's view of its session.
//!
//! A `Session` is a cheap clone of state shared by everything handling one request. Nothing
//! is loaded until a method first needs the record, so a handler that never touches its
//! session costs no store call and sets no cookie. Every change is recorded as a
//! [`Delta`]: after the handler returns, the layer writes back exactly the keys set and
//! removed (plus identity and deadlines), never the whole record, so concurrent requests on
//! one session keep each other's changes. When two requests set the *same* key at once,
//! the one whose write-back reaches the store last wins.
//!
//! ```
//! use axum::{routing::post, Router};
//! use sessionware::{MemoryStore, Session, SessionLayer};
//!
//! async fn login(session: Session) -> Result<&'static str, sessionware::Error> {
//!     // ... check the credentials first ...
//!     session.login("user-42").await?; // new ID, old one dead, data kept
//!     session.insert("theme", "dark").await?;
//!     Ok("welcome")
//! }
//!
//! async fn logout(session: Session) -> Result<&'static str, sessionware::Error> {
//!     session.logout().await?; // record destroyed server-side, cookie expired
//!     Ok("bye")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/logout", post(logout))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::Config;
use crate::error::Error;
use crate::event::SessionEvent;
use crate::id::{Id, IdHash};
use crate::record::{Deadlines, Delta, Record, SessionInfo};
use crate::service::RawId;
use crate::store::SessionStore;
use crate::timeout::StoreTimeout;

/// The longest `User-Agent` kept in a session's metadata.
const MAX_USER_AGENT: usize = 256;
/// The session's use, as the layer and every clone of the handle see it: no handler has
/// touched it yet ...
const UNTOUCHED: u8 = 0;
/// ... one has (the layer saves what changed) ...
const TOUCHED: u8 = 1;
/// ... or nothing will save a change any more: the write-back has run (or was skipped, the
/// session being unchanged), or the response never went out (the inner service failed, or
/// the request was dropped). Set under the state lock wherever a write-back starts, and
/// read under it before every change, so no change slips in after it unsaved.
const CLOSED: u8 = 2;
/// How many fresh IDs to try should one collide with a live session (it never will).
const CREATE_ATTEMPTS: usize = 3;

/// How the client sent (or will receive) its session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Cookie,
    Header,
}

/// What the layer knows of the client, kept in a new session's metadata.
#[derive(Debug, Default)]
pub(crate) struct ClientMeta {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) user_agent: Option<HeaderValue>,
}

/// A handler's handle on its session. Cheap to clone; all clones share one state.
///
/// Get it as an axum extractor, or from the request's extensions in a plain tower service.
/// Methods are async because the first one to need the record loads it from the store.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn SessionStore>,
    config: Arc<Config>,
    /// The ID the client sent, as raw header values; parsed on first use, so a request
    /// that never touches its session never pays for parsing.
    raw_id: RawId,
    incoming: OnceLock<Option<Id>>,
    transport: Transport,
    client: ClientMeta,
    /// When the layer received the request (see [`Session::refuse_if_rotated_away`]); only
    /// read off the clock when the request may carry an ID, the one case that needs it.
    arrived: Option<SystemTime>,
    /// [`UNTOUCHED`], [`TOUCHED`] or [`CLOSED`].
    used: AtomicU8,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// The session as this request sees it, its own changes included. `None`: no session.
    /// Shared with the store where it can be: copied only when this request changes it.
    record: Option<Arc<Record>>,
    /// The key the record had in the store when this request loaded it.
    stored: Option<IdHash>,
    /// An ID issued during this request: for a new session, or a rotation of `stored`.
    fresh: Option<Id>,
    /// Changes to write back to `stored` (or to carry along in a rotation).
    delta: Delta,
    /// Delete `stored` at write-back (logout).
    destroy: bool,
    /// The cookie must be sent again even without a new ID (remember-me changed or
    /// its deadline moved, so `Max-Age` did).
    reissue_cookie: bool,
    /// A handler switched remember-me on or off: a change it asked for, which must not
    /// be reported as saved if the session ended meanwhile (unlike a sliding refresh).
    remember_me_changed: bool,
    /// A handler called [`Session::set_remember_me`] in this request: its choice stands
    /// through a login as another user, which otherwise starts without remember-me.
    remember_me_chosen: bool,
}

impl State {
    /// The value `key` has as this request sees it: its own changes over the stored record.
    fn value(&self, key: &str) -> Option<&Value> {
        match self.delta.changes.get(key) {
            Some(change) => change.as_ref(),
            None if self.delta.clear => None,
            None => self.record.as_ref()?.data.get(key),
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("incoming", &self.shared.incoming.get())
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

/// What the layer must add to the response after saving.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// A `Set-Cookie` header value.
    Cookie(String),
    /// The value of the session ID response header.
    Header(String),
}

impl Session {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        config: Arc<Config>,
        raw_id: RawId,
        transport: Transport,
        client: ClientMeta,
    ) -> Self {
        let arrived = raw_id.may_hold_an_id().then(SystemTime::now);
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                raw_id,
                incoming: OnceLock::new(),
                transport,
                client,
                arrived,
                used: AtomicU8::new(UNTOUCHED),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The value under `key`, or `None` if the key (or the session) is absent.
    ///
    /// A value of another type than `T` is an [`ErrorKind::Deserialize`] error for this key
    /// only; the rest of the session is unaffected.
    ///
    /// [`ErrorKind::Deserialize`]: crate::ErrorKind::Deserialize
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let state = self.loaded().await?;
        match state.value(key) {
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|err| Error::deserialize(key, err)),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`, starting a session if there is none.
    ///
    /// A value that cannot be serialized, or that nests deeper than
    /// [`MAX_VALUE_DEPTH`](crate::store::MAX_VALUE_DEPTH), is an
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) error here, and the session is
    /// left as it was.
    pub async fn insert(&self, key: &str, value: impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(Error::serialize)?;
        // Refused here, where the handler can still answer for it, not at write-back,
        // where the store would refuse it and fail the whole response.
        crate::store::check_depth(&value)?;
        let mut state = self.loaded_to_change().await?;
        self.ensure_session(&mut state)?;
        state.delta.set(key, value);
        Ok(())
    }

    /// Removes `key`, returning the value it had (`None` if it had none).
    ///
    /// The key is removed even if its old value is not a `T`; the type error is returned
    /// after the removal.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let mut state = self.loaded_to_change().await?;
        let Some(value) = state.value(key).cloned() else {
            return Ok(None);
        };
        state.delta.remove(key);
        T::deserialize(value)
            .map(Some)
            .map_err(|err| Error::deserialize(key, err))
    }

    /// Removes every key. The session itself, its ID and its user stay.
    pub async fn clear(&self) -> Result<(), Error> {
        let mut state = self.loaded_to_change().await?;
        if state.record.is_some() {
            state.delta.clear_data();
        }
        Ok(())
    }

    /// Marks the session as authenticated for `user_id` and gives it a new ID: once the
    /// response is sent, the old ID finds nothing. A login starts a new authenticated
    /// session, so the absolute timeout counts from now. The data of an anonymous session
    /// is kept (a cart survives logging in); the data of a session that belonged to another
    /// user is not, nor is its remember-me (unless this request asked for it), so nothing
    /// passes from one user to the next.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), Error> {
        let user_id = user_id.into();
        let mut state = self.loaded_to_change().await?;
        let now = OffsetDateTime::now_utc();
        let remember_me_chosen = state.remember_me_chosen;
        let record = self.ensure_record(&mut state)?;
        let switching_user = record.user_id.as_ref().is_some_and(|old| *old != user_id);
        if switching_user {
            record.data.clear();
            // A persistent login is a choice of the user who made it: the next user on a
            // shared browser must not inherit a 30-day session they never asked for.
            record.remember_me &= remember_me_chosen;
        }
        record.user_id = Some(user_id.clone());
        record.created_at = now;
        record.last_seen = now;
        let deadlines = self.deadlines(now, now, record.remember_me);
        apply_deadlines(record, deadlines);
        if switching_user {
            state.delta.clear_data();
        }
        state.delta.user_id = Some(Some(user_id));
        state.delta.created_at = Some(now);
        state.delta.last_seen = Some(now);
        state.delta.deadlines = Some(deadlines);
        self.rotate(&mut state)
    }

    /// Ends the session: at write-back its record is deleted from the store and the client
    /// is told to forget its cookie. The handle then acts as a fresh, empty session, so a
    /// handler may still set a value (say, a farewell message) in a new session.
    pub async fn logout(&self) -> Result<(), Error> {
        let mut state = self.loaded_to_change().await?;
        end_session(&mut state);
        Ok(())
    }

    /// Gives the session a new ID, keeping its data and user: call it whenever the
    /// session's privileges change (a role granted, a password changed).
    pub async fn cycle_id(&self) -> Result<(), Error> {
        let mut state = self.loaded_to_change().await?;
        if state.record.is_none() {
            return Ok(());
        }
        self.rotate(&mut state)
    }

    /// The authenticated user, if any.
    pub async fn user_id(&self) -> Result<Option<String>, Error> {
        let state = self.loaded().await?;
        Ok(state.record.as_ref().and_then(|r| r.user_id.clone()))
    }

    /// Switches the session to the longer remember-me timeouts (and a persistent cookie
    /// whose `Max-Age` matches the server's deadline), or back to the standard ones (and a
    /// browser-session cookie). Starts a session if there is none.
    ///
    /// Switching back on a session older than the standard absolute timeout ends it, as
    /// [`logout`](Self::logout) does: a standard session never lives that long, and the
    /// next request would find it expired anyway.
    pub async fn set_remember_me(&self, remember_me: bool) -> Result<(), Error> {
        let mut state = self.loaded_to_change().await?;
        let now = OffsetDateTime::now_utc();
        state.remember_me_chosen = true;
        let record = self.ensure_record(&mut state)?;
        if record.remember_me == remember_me {
            return Ok(());
        }
        let deadlines = self.deadlines(now, record.created_at, remember_me);
        if deadlines.absolute <= now {
            end_session(&mut state);
            return Ok(());
        }
        apply_deadlines(record, deadlines);
        // The new idle deadline counts from now, so the session was seen now.
        record.last_seen = now;
        state.delta.deadlines = Some(deadlines);
        state.delta.last_seen = Some(now);
        state.reissue_cookie = true;
        state.remember_me_changed = true;
        Ok(())
    }

    /// Whether remember-me timeouts apply.
    pub async fn remember_me(&self) -> Result<bool, Error> {
        let state = self.loaded().await?;
        Ok(state.record.as_ref().is_some_and(|r| r.remember_me))
    }

    /// What an operator would see of this session (created, last seen, expiry, client), or
    /// `None` if there is no session. Its `key` is the key the session will have once this
    /// response is sent.
    pub async fn info(&self) -> Result<Option<SessionInfo>, Error> {
        let state = self.loaded().await?;
        let key = current_key(&state);
        Ok(state.record.as_ref().zip(key).map(|(r, key)| r.info(key)))
    }

    /// The sessions of the authenticated user, this one included (its `key` is the one
    /// [`info`](Self::info) reports); empty if nobody is logged in.
    pub async fn user_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(Vec::new());
        };
        let (stored, this, logged_in_here) = {
            let state = self.loaded().await?;
            let this = current_key(&state)
                .zip(state.record.as_ref())
                .map(|(key, record)| record.info(key));
            let logged_in_here = matches!(state.delta.user_id, Some(Some(_)));
            (state.stored, this, logged_in_here)
        };
        let mut sessions = self.call(self.store().list_user(&user)).await?;
        // The store knows this session as it was before this request: under its old key if
        // the request rotated it, and not at all as this user's if the request logged in.
        // List it as this request leaves it; once, and only if it is still alive or was
        // logged in here.
        let listed_before = sessions.len();
        sessions.retain(|info| Some(info.key) != stored);
        if sessions.len() < listed_before || logged_in_here {
            sessions.extend(this);
        }
        Ok(sessions)
    }

    /// Ends every other session of the authenticated user ("log out everywhere else") and
    /// returns how many ended. Does nothing if nobody is logged in.
    pub async fn revoke_other_sessions(&self) -> Result<u64, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(0);
        };
        let keep = self.loaded().await?.stored;
        let store = self.store();
        let count = self.call(store.delete_user(&user, keep.as_ref())).await?;
        self.emit_revoked(user, count);
        Ok(count)
    }

    /// Ends one session of the authenticated user, by the key a listing showed; a key of
    /// another user's session is refused (returns `false`). The key of this very session
    /// logs it out, as [`logout`](Self::logout) does.
    pub async fn revoke_session(&self, key: &IdHash) -> Result<bool, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(false);
        };
        if current_key(&*self.loaded().await?) == Some(*key) {
            // Deleting it behind this request's back would leave the client its cookie and
            // fail this request's own write-back: end it the way a logout does.
            self.logout().await?;
            return Ok(true);
        }
        let store = self.store();
        let revoked = self.call(store.delete_user_session(&user, key)).await?;
        self.emit_revoked(user, u64::from(revoked));
        Ok(revoked)
    }

    /// Loads the record on first use and returns the state, locked: to read it.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.load_state(false).await
    }

    /// [`loaded`](Self::loaded), to change the session: refused once the response has gone
    /// out, as nothing would save the change (a task spawned by the handler may outlive it).
    async fn loaded_to_change(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.load_state(true).await
    }

    async fn load_state(&self, change: bool) -> Result<MutexGuard<'_, State>, Error> {
        // Fails, leaving the mark as it is, once the session is touched or closed.
        let _ = self.shared.used.compare_exchange(
            UNTOUCHED,
            TOUCHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let mut state = self.lock_state().await;
        if change && self.shared.used.load(Ordering::Acquire) == CLOSED {
            tracing::warn!("session changed after its response was sent; the change is refused");
            return Err(Error::response_sent());
        }
        if state.loaded {
            return Ok(state);
        }
        if let Some(id) = self.incoming() {
            let key = id.hash();
            let now = OffsetDateTime::now_utc();
            let found = self.call(self.store().load_shared(&key)).await?;
            let live = found.and_then(|r| Some((self.idle_left(&r, now)?, r)));
            if let Some((idle_left, mut record)) = live {
                self.refresh_idle_deadline(&mut state, &mut record, idle_left, now);
                state.record = Some(record);
                state.stored = Some(key);
            } else {
                let ip = self.shared.client.ip;
                self.emit(SessionEvent::UnknownId { key, ip });
            }
        }
        state.loaded = true;
        Ok(state)
    }

    /// Locks the state. Nearly always it is free (only this request's own tasks share it),
    /// and taking a free lock directly skips building and polling a waiting future. A lock
    /// someone holds, or waits for, is queued for fairly, as usual.
    async fn lock_state(&self) -> MutexGuard<'_, State> {
        match self.shared.state.try_lock() {
            Ok(state) => state,
            Err(_) => self.shared.state.lock().await,
        }
    }

    /// How long `record` has before its idle deadline in force, or `None` if it has
    /// ended: past a stored deadline, or past a limit configured *now*. A session stored
    /// under longer timeouts ends as soon as the operator lowers them; the idle timeout
    /// then counts from `last_seen`, which the layer sets whenever it moves the idle
    /// deadline. (Differences of times, not sums: adding a duration to a date costs
    /// several times more, on every request.)
    fn idle_left(&self, record: &Record, now: OffsetDateTime) -> Option<Duration> {
        if record.is_expired(now) {
            return None;
        }
        let config = &self.shared.config;
        let timeouts = config.timeouts(record.remember_me);
        if now - record.created_at >= timeouts.absolute {
            return None;
        }
        let earned = timeouts
            .idle
            .saturating_add(config.refresh_step(timeouts))
            .saturating_sub(now - record.last_seen);
        let left = (record.idle_deadline - now).min(earned);
        left.is_positive().then_some(left)
    }

    /// Sliding expiry: moves the idle deadline forward only once less than one idle
    /// timeout remains (see [`config`](crate::config)), so most reads write nothing.
    fn refresh_idle_deadline(
        &self,
        state: &mut State,
        record: &mut Arc<Record>,
        idle_left: Duration,
        now: OffsetDateTime,
    ) {
        let timeouts = self.shared.config.timeouts(record.remember_me);
        if idle_left >= timeouts.idle {
            return;
        }
        let deadlines = self.deadlines(now, record.created_at, record.remember_me);
        if deadlines.idle - now <= idle_left {
            return; // already pinned to the absolute deadline
        }
        let record = Arc::make_mut(record);
        apply_deadlines(record, deadlines);
        record.last_seen = now;
        state.delta.deadlines = Some(deadlines);
        state.delta.last_seen = Some(now);
        state.reissue_cookie |= record.remember_me;
    }

    /// The record, to change its metadata (creating a session if there is none). Data
    /// changes go to the delta instead, so a write does not copy a record shared with the
    /// store.
    fn ensure_record<'s>(&self, state: &'s mut State) -> Result<&'s mut Record, Error> {
        self.ensure_session(state)?;
        Ok(Arc::make_mut(
            state.record.as_mut().expect("set just above"),
        ))
    }

    /// Starts a new, empty session (with a fresh ID) if there is none.
    fn ensure_session(&self, state: &mut State) -> Result<(), Error> {
        if state.record.is_none() {
            let now = OffsetDateTime::now_utc();
            let deadlines = self.deadlines(now, now, false);
            let mut record = Record::new(now, deadlines.idle, deadlines.absolute);
            record.ip = self.shared.client.ip.map(|ip| ip.to_string());
            record.user_agent = self.shared.client.user_agent.as_ref().map(truncated_text);
            state.fresh = Some(Id::random()?);
            state.record = Some(Arc::new(record));
        }
        Ok(())
    }

    /// Issues a new ID for a stored session (a new session already has a fresh one).
    fn rotate(&self, state: &mut State) -> Result<(), Error> {
        if state.stored.is_some() && !state.destroy {
            state.fresh = Some(Id::random()?);
        }
        Ok(())
    }

    fn deadlines(&self, now: OffsetDateTime, created: OffsetDateTime, remember: bool) -> Deadlines {
        let config = &self.shared.config;
        let timeouts = config.timeouts(remember);
        // Saturating: a stored creation time near the end of what `time` can hold, or a
        // timeout as long as `Duration::MAX` ("no limit"), pins a deadline to that end
        // instead of panicking.
        let absolute = created.saturating_add(timeouts.absolute);
        let idle = now
            .saturating_add(timeouts.idle)
            .saturating_add(config.refresh_step(timeouts))
            .min(absolute);
        Deadlines::new(idle, absolute, remember)
    }

    /// The store, as the trait object itself: calling through the `Arc` would go through
    /// the blanket `SessionStore for Arc<T>` impl and box every call's future twice.
    fn store(&self) -> &dyn SessionStore {
        &*self.shared.store
    }

    /// Runs a store call under the layer's store timeout.
    fn call<F, T>(&self, call: F) -> StoreTimeout<F>
    where
        F: Future<Output = Result<T, Error>>,
    {
        StoreTimeout::new(call, self.shared.config.store_timeout)
    }

    fn emit(&self, event: SessionEvent) {
        (self.shared.config.event_sink)(&event);
    }

    /// Reports a login, if this request's changes include one.
    fn emit_login(&self, delta: &Delta, key: IdHash) {
        if let Some(Some(user_id)) = &delta.user_id {
            let user_id = user_id.clone();
            self.emit(SessionEvent::LoggedIn { key, user_id });
        }
    }

    fn emit_revoked(&self, user_id: String, count: u64) {
        if count > 0 {
            self.emit(SessionEvent::Revoked { user_id, count });
        }
    }

    /// The well-formed ID the client sent, if any.
    fn incoming(&self) -> Option<&Id> {
        let shared = &self.shared;
        shared
            .incoming
            .get_or_init(|| shared.raw_id.parse(&shared.config.full_cookie_name))
            .as_ref()
    }

    /// Returns `true` if no handler touched the session, and makes any later change fail
    /// (the response is going out without a save). A clone touching it at this very moment
    /// wins the race: then this returns `false`, and the layer saves as usual.
    pub(crate) fn close_if_untouched(&self) -> bool {
        self.shared
            .used
            .compare_exchange(UNTOUCHED, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Makes every later change fail: no write-back will save it (see [`CLOSED`]).
    pub(crate) fn close(&self) {
        self.shared.used.store(CLOSED, Ordering::Release);
    }

    /// Marks the session saved and returns `true` if this request changed nothing, so the
    /// layer can skip the save entirely (no future to build, no lock to wait for).
    pub(crate) fn finish_if_unchanged(&self) -> bool {
        let Ok(state) = self.shared.state.try_lock() else {
            return false; // someone holds the state (a spawned task): take the full path
        };
        let unchanged = !state.loaded
            || (!state.destroy
                && state.fresh.is_none()
                && state.delta.is_empty()
                && !state.reissue_cookie);
        if unchanged {
            self.close();
        }
        unchanged
    }

    /// Writes back what this request changed, and says what the response must carry.
    pub(crate) async fn save(&self) -> Result<Option<Outgoing>, Error> {
        let mut state = self.lock_state().await;
        self.close();
        if !state.loaded {
            return Ok(None);
        }
        let store = self.store();
        let mut destroyed = false;
        if state.destroy {
            if let Some(old) = state.stored.take() {
                // The client asked to log out: its cookie is expired either way, but the
                // event reports only a logout that ended a session (another request may
                // have ended it first).
                if self.call(store.delete(&old)).await? {
                    self.emit(SessionEvent::LoggedOut { key: old });
                } else if self.call(store.rotated_at(&old)).await?.is_some() {
                    // Another request rotated the session (a login, say) after this one
                    // loaded it: it lives on under an ID this request cannot reach. A 200
                    // would claim a logout that ended nothing, and its removal cookie could
                    // overwrite the rotated one. Refused: the client, which holds the new
                    // ID by now, can log out again.
                    return Err(Error::session_ended());
                }
                destroyed = true;
            }
        }
        // Only the request that ended a session tells the client to forget its cookie: for
        // an ID that is merely unknown, a removal could overwrite a newer cookie that a
        // concurrent login just set.
        let removal = || destroyed.then(|| self.removal()).flatten();
        if state.stored.is_none() {
            // A new session is created whole: fold this request's data changes into it.
            let State { record, delta, .. } = &mut *state;
            if let Some(record) = record {
                delta.apply_to(Arc::make_mut(record));
            }
        }
        let Some(record) = state.record.as_ref() else {
            return Ok(removal());
        };
        match (state.stored, state.fresh.clone()) {
            // A new session: stored only once there is something in it worth keeping.
            (None, Some(_)) if is_blank(record) => Ok(removal()),
            (None, Some(fresh)) => {
                if !destroyed {
                    self.refuse_if_rotated_away().await?;
                }
                let id = self.create(&mut state, fresh).await?;
                self.emit(SessionEvent::Created { key: id.hash() });
                self.emit_login(&state.delta, id.hash());
                Ok(Some(self.outgoing(&id, &state)))
            }
            (Some(old), Some(fresh)) => {
                let outgoing = self.outgoing(&fresh, &state);
                // Let go of this request's copy first, so a store that shares records can
                // move it without copying.
                state.record = None;
                let moved = self
                    .call(store.rotate(&old, &fresh.hash(), &state.delta))
                    .await?;
                if !moved {
                    return Err(Error::session_ended());
                }
                let to = fresh.hash();
                self.emit(SessionEvent::Rotated { from: old, to });
                self.emit_login(&state.delta, to);
                Ok(Some(outgoing))
            }
            (Some(key), None) => {
                let outgoing = match self.incoming() {
                    Some(id)
                        if state.reissue_cookie && self.shared.transport == Transport::Cookie =>
                    {
                        Some(self.outgoing(id, &state))
                    }
                    _ => None,
                };
                // Let go of this request's copy first, so a store that shares records can
                // apply the delta in place instead of copying the record.
                state.record = None;
                if !state.delta.is_empty() {
                    let applied = self.call(store.apply(&key, &state.delta)).await?;
                    if !applied {
                        // The session ended (logout, rotation, revocation) while this
                        // request ran. A change the handler asked for was not saved: say
                        // so. A sliding refresh was only housekeeping: succeed, but never
                        // re-send the dead ID, whose cookie could overwrite a rotated one.
                        if state.delta.changes_content() || state.remember_me_changed {
                            return Err(Error::session_ended());
                        }
                        return Ok(None);
                    }
                }
                Ok(outgoing)
            }
            (None, None) => Ok(None),
        }
    }

    /// A request that was in flight while its session was rotated arrives with the old ID,
    /// finds nothing, and would start a new session whose cookie overwrites the rotated
    /// one, silently logging the user out. The store's rotation tombstone tells it apart
    /// from an ID that is merely unknown or expired: such a request is refused instead, if
    /// it arrived before the rotation or within the rotation grace after it. One arriving
    /// later comes from a client that never got the new ID: it gets a new session, rather
    /// than a 409 on every try until the tombstone expires.
    async fn refuse_if_rotated_away(&self) -> Result<(), Error> {
        let (Some(incoming), Some(arrived)) = (self.incoming(), self.shared.arrived) else {
            return Ok(());
        };
        let Some(rotated) = self.call(self.store().rotated_at(&incoming.hash())).await? else {
            return Ok(());
        };
        let arrived = OffsetDateTime::from(arrived);
        // A grace reaching past the earliest date there is refuses every such request.
        let refused = arrived
            .checked_sub(self.shared.config.rotation_grace)
            .is_none_or(|since| rotated > since);
        if refused {
            return Err(Error::session_ended());
        }
        Ok(())
    }

    /// Files a new session under a fresh ID, drawing another should it ever collide.
    async fn create(&self, state: &mut State, mut id: Id) -> Result<Id, Error> {
        let record = state.record.as_ref().expect("a new session has a record");
        for _ in 0..CREATE_ATTEMPTS {
            let key = id.hash();
            if self
                .call(self.store().create_shared(&key, Arc::clone(record)))
                .await?
            {
                state.fresh = Some(id.clone());
                return Ok(id);
            }
            id = Id::random()?;
        }
        Err(Error::store(
            "the store refused every fresh session ID as taken; is it keying records correctly?",
        ))
    }

    /// How the client receives `id`: a cookie (persistent for remember-me sessions, with a
    /// `Max-Age` matching the server's deadline) or the session header.
    fn outgoing(&self, id: &Id, state: &State) -> Outgoing {
        let config = &self.shared.config;
        match self.shared.transport {
            Transport::Header => Outgoing::Header(id.expose_secret()),
            Transport::Cookie => {
                let max_age = state
                    .record
                    .as_ref()
                    .filter(|r| r.remember_me)
                    .map(|r| r.expires_at() - OffsetDateTime::now_utc());
                Outgoing::Cookie(config.set_cookie(id, max_age))
            }
        }
    }

    /// Tells a cookie client that sent an ID to forget it.
    fn removal(&self) -> Option<Outgoing> {
        let sent_cookie = self.incoming().is_some() && self.shared.transport == Transport::Cookie;
        sent_cookie.then(|| Outgoing::Cookie(self.shared.config.removal_cookie()))
    }
}

/// A session with no data, no user and no remember-me: not worth a store write or a cookie.
fn is_blank(record: &Record) -> bool {
    record.data.is_empty() && record.user_id.is_none() && !record.remember_me
}

fn apply_deadlines(record: &mut Record, deadlines: Deadlines) {
    record.idle_deadline = deadlines.idle;
    record.absolute_deadline = deadlines.absolute;
    record.remember_me = deadlines.remember_me;
}

/// Ends the session (its record is deleted at write-back, the client told to forget its
/// cookie) and leaves the state as a fresh request's with no session.
fn end_session(state: &mut State) {
    state.destroy = state.stored.is_some();
    state.record = None;
    state.fresh = None;
    state.delta = Delta::default();
    state.reissue_cookie = false;
    state.remember_me_changed = false;
    state.remember_me_chosen = false;
}

/// The key the session has once this response is sent.
fn current_key(state: &State) -> Option<IdHash> {
    state.fresh.as_ref().map(Id::hash).or(state.stored)
}

fn truncated_text(value: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    text.chars().take(MAX_USER_AGENT).collect()
}

/// A typed view of one session key, for handlers that prefer a named accessor to string
/// keys scattered through the code.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sessionware::{Key, Session};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Cart { items: Vec<u32> }
///
/// const CART: Key<Cart> = Key::new("cart");
///
/// async fn add(session: Session, item: u32) -> Result<(), sessionware::Error> {
///     let mut cart = CART.get(&session).await?.unwrap_or_default();
///     cart.items.push(item);
///     CART.insert(&session, &cart).await
/// }
/// ```
pub struct Key<T> {
    name: &'static str,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    /// A key named `name` holding a `T`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _type: std::marker::PhantomData,
        }
    }

    /// The key's name in the session.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T: Serialize + for<'de> Deserialize<'de>> Key<T> {
    /// The value, if set.
    pub async fn get(&self, session: &Session) -> Result<Option<T>, Error> {
        session.get(self.name).await
    }

    /// Sets the value.
    pub async fn insert(&self, session: &Session, value: &T) -> Result<(), Error> {
        session.insert(self.name, value).await
    }

    /// Removes the value, returning it.
    pub async fn remove(&self, session: &Session) -> Result<Option<T>, Error> {
        session.remove(self.name).await
    }
}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.name).finish()
    }
}

// Written by hand: a derive would demand `T: Clone`, which a key never needs.
impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Key<T> {}
