//! axum integration: [`Session`] as an extractor, and [`Error`] as a response.
//!
//! ```
//! use axum::{routing::get, Router};
//! use sessionware::{MemoryStore, Session, SessionLayer};
//!
//! // `Option<Session>` never fails: `None` when the layer is missing.
//! async fn whoami(session: Option<Session>) -> Result<String, sessionware::Error> {
//!     let Some(session) = session else { return Ok("no sessions here".into()) };
//!     Ok(session.user_id().await?.unwrap_or_else(|| "anonymous".into()))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::Error;
use crate::session::Session;

/// The rejection when a handler asks for a [`Session`] but no
/// [`SessionLayer`](crate::SessionLayer) wraps the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingSessionLayer;

impl MissingSessionLayer {
    /// Always 500: the server is misconfigured.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The text of the response: generic, like every error response of this crate. What
    /// is missing is logged (and is this type's `Display`), not sent to the client.
    pub fn body_text(&self) -> &'static str {
        "Session error."
    }
}

impl fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a handler asked for a Session, but no SessionLayer wraps its route: \
             add `.layer(SessionLayer::new(store))` to the router",
        )
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (self.status(), self.body_text()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// Marks a response made from an [`Error`], so the layer can give it the shape the user
/// chose with [`SessionLayer::with_error_response`](crate::SessionLayer::with_error_response).
#[derive(Clone)]
pub(crate) struct ErrorMarker(pub(crate) Arc<Error>);

impl IntoResponse for Error {
    /// The generic response for this error ([`Error::status`], [`Error::body_text`]); the
    /// cause is logged, never sent.
    fn into_response(self) -> Response {
        self.log();
        let mut response = self.default_response().map(axum::body::Body::from);
        response
            .extensions_mut()
            .insert(ErrorMarker(Arc::new(self)));
        response
    }
}
