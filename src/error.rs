//! The one error type of this crate.
//!
//! Every failure is an [`Error`]: opaque, with a [`kind`](Error::kind) to branch on and the
//! original cause kept as its [`source`](std::error::Error::source). Its HTTP form (see
//! [`Error::status`]) is deliberately generic: a client learns that the session service is
//! unavailable or failed, never which store, host or query was involved. The details go
//! to `tracing` when the response is made.
//!
//! ```
//! use sessionware::{Error, ErrorKind};
//! use http::StatusCode;
//!
//! let err = Error::unavailable(std::io::Error::other("connection refused"));
//! assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
//! assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert!(!err.body_text().contains("refused"));
//! ```

use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;

type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store could not be reached (connection refused, reset, pool exhausted). Retrying
    /// later may succeed. HTTP 503.
    StoreUnavailable,
    /// The store did not answer within the layer's store timeout. HTTP 503.
    StoreTimeout,
    /// The store answered with an error (a failed query, a script error). HTTP 500.
    Store,
    /// A value could not be turned into JSON for storing. HTTP 500.
    Serialize,
    /// A stored value exists but does not have the type asked for. The rest of the session
    /// is unaffected. HTTP 500.
    Deserialize,
    /// The session was destroyed (logged out, rotated, revoked or expired) by another request
    /// while this one was changing it, so the change was not saved. HTTP 409.
    SessionEnded,
    /// A change was asked of a session after its request's response had gone out (by a
    /// task the handler spawned, which outlived it): the session had already been written
    /// back, so the change could not be saved. HTTP 500.
    ResponseSent,
    /// The operating system could not supply random bytes for a new ID. HTTP 500.
    Randomness,
    /// A setting could never work: a store's table name, its cleanup batch size, or its
    /// cleanup started outside a Tokio runtime. (Contradictory [`SessionLayer`] settings
    /// carry this kind too, in the panic of [`Layer::layer`].) HTTP 500.
    ///
    /// [`SessionLayer`]: crate::SessionLayer
    /// [`Layer::layer`]: tower_layer::Layer::layer
    Config,
}

/// The error every fallible operation of this crate returns.
///
/// Implements `axum::response::IntoResponse` (with the `axum` feature), so handlers can use `?` on session calls.
pub struct Error {
    kind: ErrorKind,
    context: &'static str,
    cause: Option<Cause>,
}

impl Error {
    fn new(kind: ErrorKind, context: &'static str, cause: Option<Cause>) -> Self {
        Self {
            kind,
            context,
            cause,
        }
    }

    /// The store cannot be reached; keep the connection error as the cause.
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::new(
            ErrorKind::StoreUnavailable,
            "session store unreachable",
            Some(cause.into()),
        )
    }

    /// The store answered with an error; keep it as the cause.
    pub fn store(cause: impl Into<Cause>) -> Self {
        Self::new(ErrorKind::Store, "session store failed", Some(cause.into()))
    }

    /// The store did not answer in time.
    pub fn timeout() -> Self {
        Self::new(ErrorKind::StoreTimeout, "session store timed out", None)
    }

    pub(crate) fn serialize(cause: serde_json::Error) -> Self {
        Self::new(
            ErrorKind::Serialize,
            "session value could not be serialized",
            Some(cause.into()),
        )
    }

    pub(crate) fn deserialize(key: &str, cause: serde_json::Error) -> Self {
        let cause = format!("session key {key:?} holds a value of another type: {cause}");
        Self::new(
            ErrorKind::Deserialize,
            "session value has an unexpected type",
            Some(cause.into()),
        )
    }

    pub(crate) fn session_ended() -> Self {
        Self::new(
            ErrorKind::SessionEnded,
            "session ended by another request before its changes were saved",
            None,
        )
    }

    pub(crate) fn response_sent() -> Self {
        Self::new(
            ErrorKind::ResponseSent,
            "session changed after its response was sent; the change was not saved",
            None,
        )
    }

    pub(crate) fn randomness(cause: String) -> Self {
        Self::new(
            ErrorKind::Randomness,
            "no randomness for a session ID",
            Some(cause.into()),
        )
    }

    pub(crate) fn config(problem: &'static str) -> Self {
        Self::new(ErrorKind::Config, problem, None)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status a response for this error carries: 503 when the store is unreachable
    /// or timed out, 409 when another request ended the session first, 500 otherwise.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::StoreUnavailable | ErrorKind::StoreTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::SessionEnded => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The generic body text a response for this error carries. It names no internals.
    pub fn body_text(&self) -> &'static str {
        match self.kind {
            ErrorKind::StoreUnavailable | ErrorKind::StoreTimeout => {
                "Session service temporarily unavailable. Please retry."
            }
            ErrorKind::SessionEnded => "Your session ended during this request. Please retry.",
            _ => "Session error.",
        }
    }

    /// Logs the error with its cause chain, once, where a response is made of it.
    pub(crate) fn log(&self) {
        match self.status() {
            StatusCode::CONFLICT => tracing::info!(error = %self, "session change not saved"),
            _ => tracing::error!(error = %self, kind = ?self.kind, "session error"),
        }
    }

    /// The default response: status and generic text, no internals.
    pub(crate) fn default_response(&self) -> http::Response<String> {
        let mut response = http::Response::new(self.body_text().to_owned());
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        response
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("context", &self.context)
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.context)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause.as_deref().map(|cause| cause as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_kind() {
        let io = || std::io::Error::other("down at 10.0.0.7:6379");
        assert_eq!(Error::unavailable(io()).status(), 503);
        assert_eq!(Error::timeout().status(), 503);
        assert_eq!(Error::store(io()).status(), 500);
        assert_eq!(Error::session_ended().status(), 409);
        assert_eq!(Error::config("bad").status(), 500);
        assert_eq!(Error::response_sent().status(), 500);
    }

    #[test]
    fn cause_is_kept_but_never_in_the_body() {
        let err = Error::store(std::io::Error::other("down at 10.0.0.7:6379"));
        assert!(err.to_string().contains("10.0.0.7"));
        assert!(err.source().unwrap().to_string().contains("10.0.0.7"));
        let response = err.default_response();
        assert!(!response.body().contains("10.0.0.7"));
        assert_eq!(response.headers()["cache-control"], "no-store");
    }

    #[test]
    fn deserialize_error_names_the_key() {
        let cause = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        let err = Error::deserialize("counter", cause);
        assert_eq!(err.kind(), ErrorKind::Deserialize);
        assert!(err.to_string().contains("\"counter\""));
    }
}
