//! [`SessionLayer`]: the tower layer that gives every request a lazy [`Session`].
//!
//! ```
//! use axum::{routing::get, Router};
//! use sessionware::{MemoryStore, SameSite, Session, SessionLayer};
//! use time::Duration;
//!
//! async fn count(session: Session) -> Result<String, sessionware::Error> {
//!     let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! let app: Router = Router::new().route("/", get(count)).layer(
//!     SessionLayer::new(MemoryStore::new())
//!         .with_cookie_name("sid")
//!         .with_same_site(SameSite::Strict)
//!         .with_idle_timeout(Duration::minutes(15))
//!         .with_absolute_timeout(Duration::hours(8)),
//! );
//! ```
//!
//! [`Session`]: crate::Session

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use time::Duration;
use tower_layer::Layer;

use crate::config::{is_attribute_value, is_cookie_name, Config, ErrorHandler, SameSite};
use crate::error::Error;
use crate::event::{EventSink, SessionEvent};
use crate::service::SessionService;
use crate::store::SessionStore;

/// A [`Layer`] that reads the session ID from each request, hands the handler a lazy
/// [`Session`](crate::Session), and writes back what changed. See [`config`](crate::config)
/// for the defaults and why they are what they are.
///
/// Settings that could never work are programming errors, and they surface when the
/// router is built, before the first request: a builder method panics on a value that is
/// invalid by itself (an invalid cookie or header name), and [`Layer::layer`] panics on
/// settings that contradict each other (a `__Host-` cookie that is not `Secure`).
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    store: Arc<dyn SessionStore>,
    // Shared, so that `layer` (which axum may call per request on a router that was not
    // made into a service first) costs two reference-count bumps.
    config: Arc<Config>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("cookie_name", &self.config.full_cookie_name())
            .field("header", &self.config.header)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer keeping sessions in `store`, with the secure defaults.
    pub fn new(store: impl SessionStore) -> Self {
        Self {
            store: Arc::new(store),
            config: Arc::new(Config::default()),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The session cookie's name (default `id`). With [`with_host_prefix`], `__Host-` is
    /// put in front of it.
    ///
    /// # Panics
    /// If `name` is not a valid cookie name (an HTTP token).
    ///
    /// [`with_host_prefix`]: Self::with_host_prefix
    pub fn with_cookie_name(mut self, name: &str) -> Self {
        assert!(is_cookie_name(name), "invalid session cookie name {name:?}");
        let host_prefix = self.config.host_prefix;
        self.config_mut().set_cookie_name(name, host_prefix);
        self
    }

    /// Whether the cookie carries `Secure` (default `true`). Turn it off only for local
    /// development over plain HTTP.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.config_mut().secure = secure;
        self
    }

    /// Whether the cookie carries `HttpOnly` (default `true`).
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.config_mut().http_only = http_only;
        self
    }

    /// The cookie's `SameSite` attribute (default [`SameSite::Lax`]).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.config_mut().same_site = same_site;
        self
    }

    /// The cookie's `Path` (default `/`).
    ///
    /// # Panics
    /// If `path` is empty or holds characters a cookie attribute cannot.
    pub fn with_path(mut self, path: &str) -> Self {
        assert!(is_attribute_value(path), "invalid cookie path {path:?}");
        self.config_mut().path = path.to_owned();
        self
    }

    /// The cookie's `Domain` (default: none, so the cookie stays on the host that set it).
    ///
    /// # Panics
    /// If `domain` is empty or holds characters a cookie attribute cannot.
    pub fn with_domain(mut self, domain: &str) -> Self {
        assert!(
            is_attribute_value(domain),
            "invalid cookie domain {domain:?}"
        );
        self.config_mut().domain = Some(domain.to_owned());
        self
    }

    /// Names the cookie `__Host-<name>` (default off), which browsers accept only when it is
    /// `Secure`, has `Path=/` and no `Domain`: a subdomain or a plain-HTTP page can then
    /// neither set nor overwrite the session cookie.
    pub fn with_host_prefix(mut self, host_prefix: bool) -> Self {
        let name = self.config.cookie_name.clone();
        self.config_mut().set_cookie_name(&name, host_prefix);
        self
    }

    /// The request and response header that carries the ID for clients without cookies
    /// (default `x-session-id`).
    ///
    /// # Panics
    /// If `name` is not a valid header name.
    pub fn with_header_name(mut self, name: &str) -> Self {
        let name = HeaderName::try_from(name)
            .unwrap_or_else(|_| panic!("invalid session header name {name:?}"));
        self.config_mut().header = Some(name);
        self
    }

    /// Turns the header transport off: the ID travels only in the cookie.
    pub fn without_header(mut self) -> Self {
        self.config_mut().header = None;
        self
    }

    /// How long a session may go unused before it ends (default 30 minutes). Lowering it
    /// applies to stored sessions at their next request: one unused for longer than the
    /// new timeout plus one refresh step (counted from its `last_seen`) has ended.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.config_mut().standard.idle = idle;
        self
    }

    /// How long a session may last however much it is used (default 12 hours). A login
    /// starts the count again. Lowering it applies to stored sessions at their next
    /// request. (Store listings and counts go by the deadlines stored.)
    pub fn with_absolute_timeout(mut self, absolute: Duration) -> Self {
        self.config_mut().standard.absolute = absolute;
        self
    }

    /// The idle and absolute timeouts of remember-me sessions (default 30 days each); see
    /// [`Session::set_remember_me`](crate::Session::set_remember_me).
    pub fn with_remember_me_timeouts(mut self, idle: Duration, absolute: Duration) -> Self {
        self.config_mut().remember_me.idle = idle;
        self.config_mut().remember_me.absolute = absolute;
        self
    }

    /// How far the idle deadline may overshoot to spare store writes (default: a thirtieth
    /// of the idle timeout). Reads extend a session's deadline at most once per step; a
    /// session unused for the idle timeout is gone within one more step. Zero extends on
    /// every request. See [`config`](crate::config#sliding-expiry-without-a-write-on-every-read).
    pub fn with_idle_refresh_step(mut self, step: Duration) -> Self {
        self.config_mut().refresh_step = Some(step);
        self
    }

    /// How long after a rotation a request arriving with the old ID is still taken for one
    /// the client sent before it got the new ID, and refused (409) rather than given a new
    /// session whose cookie would overwrite the rotated one (default 10 seconds). A request
    /// arriving later is served a new session: its client evidently lost the response that
    /// carried the new ID. Grace beyond
    /// [`ROTATION_TOMBSTONE`](crate::store::ROTATION_TOMBSTONE) changes nothing. See
    /// [`config`](crate::config#requests-that-race-a-rotation).
    pub fn with_rotation_grace(mut self, grace: Duration) -> Self {
        self.config_mut().rotation_grace = grace;
        self
    }

    /// How long any one store call may take before the request fails with a 503
    /// (default 5 seconds).
    pub fn with_store_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config_mut().store_timeout = Some(timeout);
        self
    }

    /// Lets store calls take as long as the store takes.
    pub fn without_store_timeout(mut self) -> Self {
        self.config_mut().store_timeout = None;
        self
    }

    /// Shapes the response the client gets for a session [`Error`], both for errors the
    /// layer meets while saving and for errors handlers return with `?`. The default is
    /// [`Error::status`] with the generic [`Error::body_text`].
    ///
    /// ```
    /// use sessionware::{MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::new()).with_error_response(|err| {
    ///     http::Response::builder()
    ///         .status(err.status())
    ///         .header("content-type", "application/json")
    ///         .body(format!(r#"{{"error":"session","retry":{}}}"#, err.status() == 503))
    ///         .unwrap()
    /// });
    /// ```
    pub fn with_error_response<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Error) -> http::Response<String> + Send + Sync + 'static,
    {
        let handler: ErrorHandler = Arc::new(handler);
        self.config_mut().error_handler = Some(handler);
        self
    }
}

impl SessionLayer {
    /// Sends every [`SessionEvent`] to `sink` instead of logging it (the default). The sink
    /// runs on the request's task: keep it quick (count, or hand off to a channel).
    pub fn with_event_sink<F>(mut self, sink: F) -> Self
    where
        F: Fn(&SessionEvent) + Send + Sync + 'static,
    {
        let sink: EventSink = Arc::new(sink);
        self.config_mut().event_sink = sink;
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    /// # Panics
    /// If the settings contradict each other (see [`ErrorKind::Config`](crate::ErrorKind)).
    fn layer(&self, inner: S) -> Self::Service {
        if let Err(problem) = self.config.validate() {
            panic!("invalid SessionLayer settings: {problem}");
        }
        SessionService::new(inner, self.store.clone(), self.config.clone())
    }
}
