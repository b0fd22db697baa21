//! Server-side sessions for [tower] and [axum]: secure by default, lazy, and safe under
//! concurrency.
//!
//! Only a random ID travels to the client, in a cookie or (for clients without cookies) an
//! `x-session-id` header; everything else lives in a [`SessionStore`]. Wrap a router in
//! [`SessionLayer`] and take a [`Session`] in any handler:
//!
//! ```
//! use axum::{routing::get, Router};
//! use sessionware::{MemoryStore, Session, SessionLayer};
//! use tower::ServiceExt;
//!
//! async fn count(session: Session) -> Result<String, sessionware::Error> {
//!     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", visits).await?;
//!     Ok(format!("visit {visits}"))
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/", get(count))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//!
//! let response = app
//!     .oneshot(http::Request::get("/").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! let cookie = response.headers()["set-cookie"].to_str().unwrap();
//! assert!(cookie.starts_with("id="));
//! assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
//! # });
//! ```
//!
//! # What it guarantees
//! - **IDs**: 256 bits from the OS CSPRNG; stores see only their SHA-256 ([`IdHash`]). An
//!   ID the server does not know is never adopted: a new session gets a fresh ID.
//! - **Lazy**: no store call and no cookie for a request that never touches its session; no
//!   write for one that only reads (unless its idle deadline is due to move).
//! - **Deltas**: only the keys a request set or removed are written, atomically, and only
//!   if the session still exists, so concurrent requests keep each other's changes and a
//!   logout is never undone by a request still in flight.
//! - **Rotation**: [`Session::login`], [`Session::logout`] and [`Session::cycle_id`] follow
//!   OWASP: the old ID is dead once the response is sent.
//! - **Expiry**: idle and absolute timeouts, enforced on the server (see [`config`]).
//! - **Failures**: a store that is down or slow yields a 503 with a generic body (see
//!   [`Error`]); a failed save replaces the handler's response, never a false success.
//!
//! # Features
//! - `axum` (default): [`Session`] is an axum extractor; [`Error`] implements
//!   `IntoResponse`.
//! - `memory` (default): [`MemoryStore`].
//! - `redis`: `RedisStore`, on a single server or a Redis Cluster.
//! - `postgres`: `PostgresStore`.
//! - `sqlite`: `SqliteStore` (SQLite is bundled: nothing to install).
//!
//! [`CachingStore`], an in-process cache in front of any store, needs no feature.
//!
//! # Without axum
//! In a plain tower service, take the session from the request's extensions:
//! `request.extensions().get::<Session>().cloned()`.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod config;
pub mod data;
mod error;
pub mod event;
#[cfg(feature = "axum")]
mod extract;
mod id;
mod layer;
#[cfg(any(feature = "redis", feature = "sqlite"))]
mod millis;
mod record;
pub mod service;
mod session;
pub mod store;
#[cfg(test)]
mod test_support;
mod timeout;

pub use config::SameSite;
pub use data::SessionData;
pub use error::{Error, ErrorKind};
pub use event::SessionEvent;
#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use id::{Id, IdHash, ParseIdHashError};
pub use layer::SessionLayer;
pub use record::{Deadlines, Delta, Record, SessionInfo};
pub use service::SessionService;
pub use session::{Key, Session};
#[cfg(feature = "memory")]
pub use store::memory::MemoryStore;
pub use store::SessionStore;
// Store re-exports, one line per store:
pub use store::caching::CachingStore;
#[cfg(feature = "redis")]
pub use store::redis::RedisStore;
#[cfg(feature = "postgres")]
pub use store::sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::sql::SqliteStore;

// The README's examples are compiled as doc-tests, so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
