//! Session events, for audit trails and metrics.
//!
//! The layer reports each event once it has happened (the store confirmed it) to the sink
//! given with [`SessionLayer::with_event_sink`](crate::SessionLayer::with_event_sink). The
//! default sink logs each event through `tracing` at `info` level under the target
//! `sessionware::event` (store errors at `error`). Events name sessions by their store key,
//! never by their ID.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use sessionware::{MemoryStore, SessionEvent, SessionLayer};
//!
//! let logins = Arc::new(AtomicU64::new(0));
//! let counter = logins.clone();
//! let layer = SessionLayer::new(MemoryStore::new()).with_event_sink(move |event| {
//!     if let SessionEvent::LoggedIn { .. } = event {
//!         counter.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use crate::error::ErrorKind;
use crate::id::IdHash;

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was stored.
    Created {
        /// Its store key.
        key: IdHash,
    },
    /// A session's ID was rotated (by [`cycle_id`](crate::Session::cycle_id) or a login).
    Rotated {
        /// The key it had.
        from: IdHash,
        /// The key it has now.
        to: IdHash,
    },
    /// A user logged in; the session was rotated to `key` (or created under it).
    LoggedIn {
        /// The session's store key after the login.
        key: IdHash,
        /// The user.
        user_id: String,
    },
    /// A session was ended by its own request: [`logout`](crate::Session::logout), a
    /// [`revoke_session`](crate::Session::revoke_session) of its own key (ending this very
    /// session is a logout), or a switch off remember-me on a session already past the
    /// standard absolute timeout.
    LoggedOut {
        /// The key it had.
        key: IdHash,
    },
    /// Other sessions of a user were ended through
    /// [`revoke_session`](crate::Session::revoke_session) or
    /// [`revoke_other_sessions`](crate::Session::revoke_other_sessions).
    Revoked {
        /// The user whose sessions ended.
        user_id: String,
        /// How many ended.
        count: u64,
    },
    /// A request presented a well-formed session ID that matches no live session, so the
    /// ID was not adopted (a session the request starts gets a fresh one). Its session
    /// expired or ended, or the ID was never issued: stores keep nothing of ended sessions
    /// to tell these apart. Many of these from one client suggest someone guessing IDs
    /// (OWASP's session ID brute-force detection). Reported when a handler first touches
    /// the session; a malformed ID is dropped before that, without an event.
    UnknownId {
        /// The store key the ID would have.
        key: IdHash,
        /// The client's address, when the server provides it (axum's `ConnectInfo`, or a
        /// `SocketAddr` request extension).
        ip: Option<IpAddr>,
    },
    /// A store call failed; the request got an error response.
    StoreError {
        /// What kind of failure.
        kind: ErrorKind,
    },
}

/// Where [`SessionEvent`]s go.
pub(crate) type EventSink = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// The default sink: one `tracing` line per event.
pub(crate) fn log_event(event: &SessionEvent) {
    const TARGET: &str = "sessionware::event";
    match event {
        SessionEvent::Created { key } => {
            tracing::info!(target: TARGET, session = %key.short(), "session created");
        }
        SessionEvent::Rotated { from, to } => {
            tracing::info!(target: TARGET, from = %from.short(), to = %to.short(), "session ID rotated");
        }
        SessionEvent::LoggedIn { key, .. } => {
            tracing::info!(target: TARGET, session = %key.short(), "logged in");
        }
        SessionEvent::LoggedOut { key } => {
            tracing::info!(target: TARGET, session = %key.short(), "logged out");
        }
        SessionEvent::Revoked { count, .. } => {
            tracing::info!(target: TARGET, count, "sessions revoked");
        }
        SessionEvent::UnknownId { key, ip } => {
            tracing::info!(target: TARGET, session = %key.short(), ?ip, "unknown session ID not adopted");
        }
        SessionEvent::StoreError { kind } => {
            tracing::error!(target: TARGET, ?kind, "session store error");
        }
    }
}
