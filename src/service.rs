//! [`SessionService`], the middleware [`SessionLayer`](crate::SessionLayer) builds, and its
//! [`ResponseFuture`].
//!
//! Per request it (1) reads the session ID from the cookie or the session header and checks
//! its form, before any store call; (2) puts a lazy [`Session`] into the request's
//! extensions; (3) after the inner service answers, saves what the handler changed and
//! sets the cookie or header. A save that fails replaces the response with the error's,
//! so a client never sees a success for a change that was not stored.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::event::SessionEvent;
use crate::id::Id;
use crate::session::{ClientMeta, Outgoing, Session, Transport};
use crate::store::SessionStore;

/// Middleware that gives each request a [`Session`]. Built by
/// [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S> {
    inner: S,
    store: Arc<dyn SessionStore>,
    config: Arc<Config>,
}

// Written by hand: a derive would demand `S: Debug` / `S: Clone` of nothing more than the
// derive needs, and would print the whole configuration.
impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, store: Arc<dyn SessionStore>, config: Arc<Config>) -> Self {
        Self {
            inner,
            store,
            config,
        }
    }

    fn session_for(&self, headers: &HeaderMap, extensions: &http::Extensions) -> Session {
        let (raw_id, transport) = RawId::capture(&self.config, headers);
        let client = ClientMeta {
            ip: client_ip(extensions),
            user_agent: headers.get(USER_AGENT).cloned(),
        };
        Session::new(
            self.store.clone(),
            self.config.clone(),
            raw_id,
            transport,
            client,
        )
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let session = self.session_for(request.headers(), request.extensions());
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
                session: OpenSession(Some(session)),
                config: self.config.clone(),
            },
        }
    }
}

type SaveFuture<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pin_project! {
    /// The response future of [`SessionService`]: the inner service's, then the save.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            session: OpenSession,
            config: Arc<Config>,
        },
        Saving {
            future: SaveFuture<B>,
        },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner {
                    future,
                    session,
                    config,
                } => {
                    let result = ready!(future.poll(cx));
                    let session = session.0.take().expect("polled after completion");
                    let response = match result {
                        Ok(response) => response,
                        Err(error) => {
                            session.close();
                            return Poll::Ready(Err(error));
                        }
                    };
                    let response = shape_handler_error(response, config);
                    if session.close_if_untouched() || session.finish_if_unchanged() {
                        // Untouched, or only read: no store write, no cookie.
                        return Poll::Ready(Ok(response));
                    }
                    let config = config.clone();
                    let future = Box::pin(async move {
                        match session.save().await {
                            Ok(outgoing) => attach(response, outgoing, &config),
                            Err(error) => error_response(&error, &config),
                        }
                    });
                    this.state.set(State::Saving { future });
                }
                StateProj::Saving { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// The request's session until its response is ready. Should the response never get
/// there (the inner service failed, or the client went away and the future was dropped),
/// nothing will save the session: it is closed, so that a task the handler spawned cannot
/// change it afterwards and be told the change succeeded.
struct OpenSession(Option<Session>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.close();
        }
    }
}

/// Adds the new cookie or header to the response, and `Cache-Control: no-store` with a
/// cookie (a shared cache must never hand one client's session cookie to another) unless
/// the handler chose its own.
fn attach<B>(
    mut response: Response<B>,
    outgoing: Option<Outgoing>,
    config: &Config,
) -> Response<B> {
    let headers = response.headers_mut();
    match outgoing {
        None => {}
        Some(Outgoing::Cookie(cookie)) => {
            if let Ok(value) = HeaderValue::try_from(cookie) {
                headers.append(SET_COOKIE, value);
                if !headers.contains_key(CACHE_CONTROL) {
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
            }
        }
        Some(Outgoing::Header(id)) => {
            if let (Some(name), Ok(value)) = (&config.header, HeaderValue::try_from(id)) {
                headers.insert(name.clone(), value);
                if !headers.contains_key(CACHE_CONTROL) {
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
            }
        }
    }
    response
}

/// The response for an error: the user's shape if they gave one, else the default.
pub(crate) fn error_response<B: From<String>>(error: &Error, config: &Config) -> Response<B> {
    error.log();
    report_store_error(error, config);
    let response = match &config.error_handler {
        Some(handler) => handler(error),
        None => error.default_response(),
    };
    response.map(B::from)
}

/// Reports a failed store call as a [`SessionEvent::StoreError`].
fn report_store_error(error: &Error, config: &Config) {
    if matches!(
        error.kind(),
        ErrorKind::StoreUnavailable | ErrorKind::StoreTimeout | ErrorKind::Store
    ) {
        (config.event_sink)(&SessionEvent::StoreError { kind: error.kind() });
    }
}

/// Reports a handler's `?`-returned session error, and gives it the user's shape if they
/// chose one.
fn shape_handler_error<B: From<String>>(response: Response<B>, config: &Config) -> Response<B> {
    #[cfg(feature = "axum")]
    if let Some(marker) = response.extensions().get::<crate::extract::ErrorMarker>() {
        report_store_error(&marker.0, config);
        if let Some(handler) = &config.error_handler {
            return handler(&marker.0).map(B::from);
        }
    }
    #[cfg(not(feature = "axum"))]
    let _ = config;
    response
}

/// The session ID as a request carried it, before parsing: reference-counted clones of
/// the header values, taken per request at the cost of a few counter increments.
#[derive(Debug, Default)]
pub(crate) enum RawId {
    /// Neither the session header nor a `Cookie` header.
    #[default]
    Absent,
    /// Exactly one session header value.
    Header(HeaderValue),
    /// The session header more than once: ambiguous, so no ID.
    Ambiguous,
    /// The request's one `Cookie` header (HTTP/1.1 sends one; no allocation to keep it).
    Cookie(HeaderValue),
    /// The request's `Cookie` header values, when there are several (HTTP/2 may split them).
    Cookies(Vec<HeaderValue>),
}

impl RawId {
    /// Whether an ID could be read from it: not when nothing was sent, nor when the session
    /// header came more than once.
    pub(crate) fn may_hold_an_id(&self) -> bool {
        !matches!(self, RawId::Absent | RawId::Ambiguous)
    }

    /// Captures what the request carries, and how the client wants its ID back.
    ///
    /// A request that sends the session header (even empty) is a header client; all others
    /// are cookie clients.
    pub(crate) fn capture(config: &Config, headers: &HeaderMap) -> (Self, Transport) {
        if let Some(name) = &config.header {
            let mut values = headers.get_all(name).iter();
            if let Some(first) = values.next() {
                let raw = match values.next() {
                    None => RawId::Header(first.clone()),
                    Some(_) => RawId::Ambiguous,
                };
                return (raw, Transport::Header);
            }
        }
        let mut cookies = headers.get_all(COOKIE).iter();
        let raw = match (cookies.next(), cookies.next()) {
            (None, _) => RawId::Absent,
            (Some(only), None) => RawId::Cookie(only.clone()),
            (Some(_), Some(_)) => RawId::Cookies(headers.get_all(COOKIE).iter().cloned().collect()),
        };
        (raw, Transport::Cookie)
    }

    /// The well-formed ID carried, if any. Anything ambiguous or malformed (two cookies of
    /// our name, two headers, a wrong length or alphabet, bytes that are not text) is none.
    pub(crate) fn parse(&self, cookie_name: &str) -> Option<Id> {
        match self {
            RawId::Absent | RawId::Ambiguous => None,
            RawId::Header(value) => Id::parse(value.as_bytes()),
            RawId::Cookie(value) => cookie_id(std::slice::from_ref(value), cookie_name.as_bytes()),
            RawId::Cookies(values) => cookie_id(values, cookie_name.as_bytes()),
        }
    }
}

/// The session ID in the request's cookies, if exactly one cookie has our name and its
/// value is a well-formed ID.
fn cookie_id(headers: &[HeaderValue], name: &[u8]) -> Option<Id> {
    let mut found: Option<&[u8]> = None;
    for header in headers {
        let mut rest = header.as_bytes();
        while !rest.is_empty() {
            // One `name=value` pair up to the next `;` (a tight byte search per pair).
            let end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
            let pair = rest[..end].trim_ascii();
            rest = rest.get(end + 1..).unwrap_or_default();
            let Some(value) = pair.strip_prefix(name).and_then(|v| v.strip_prefix(b"=")) else {
                continue;
            };
            if found.is_some() {
                // Two cookies of our name: a cookie-tossing attempt or a stale duplicate
                // for another path. Neither can be trusted to be the right one.
                return None;
            }
            found = Some(value);
        }
    }
    found.and_then(Id::parse)
}

fn client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0.ip());
    }
    extensions
        .get::<std::net::SocketAddr>()
        .map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_id(config: &Config, headers: &HeaderMap) -> (Option<Id>, Transport) {
        let (raw, transport) = RawId::capture(config, headers);
        (raw.parse(&config.full_cookie_name()), transport)
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn a_failing_inner_service_closes_the_session() {
        use std::sync::Mutex;
        use tower::{Layer, ServiceExt};

        // A plain tower service that hands its session out, then fails.
        let kept: Arc<Mutex<Option<Session>>> = Arc::default();
        let slot = Arc::clone(&kept);
        let failing = tower::service_fn(move |request: Request<String>| {
            let session = request.extensions().get::<Session>().cloned();
            *slot.lock().unwrap() = session;
            async { Err::<Response<String>, &str>("inner failure") }
        });
        let service = crate::SessionLayer::new(crate::MemoryStore::new()).layer(failing);
        let result = service.oneshot(Request::new(String::new())).await;
        assert_eq!(result.unwrap_err(), "inner failure");
        let session = kept
            .lock()
            .unwrap()
            .take()
            .expect("the service saw a session");
        let late = session.insert("late", 1).await.unwrap_err();
        assert_eq!(late.kind(), ErrorKind::ResponseSent, "nothing will save it");
    }

    #[test]
    fn finds_the_cookie_among_others_and_across_headers() {
        let id = Id::random().unwrap().expose_secret();
        let config = Config::default();
        let one = format!("theme=dark; id={id}; lang=en");
        let (found, transport) = read_id(&config, &headers(&[("cookie", one.as_bytes())]));
        assert_eq!(found.unwrap().expose_secret(), id);
        assert_eq!(transport, Transport::Cookie);
        let split = format!("id={id}");
        let map = headers(&[("cookie", b"a=1"), ("cookie", split.as_bytes())]);
        assert!(read_id(&config, &map).0.is_some());
    }

    #[test]
    fn cookie_names_match_exactly() {
        let id = Id::random().unwrap().expose_secret();
        let config = Config::default();
        for cookie in [format!("xid={id}"), format!("ID={id}"), format!("id ={id}")] {
            let map = headers(&[("cookie", cookie.as_bytes())]);
            assert!(read_id(&config, &map).0.is_none(), "{cookie}");
        }
    }

    #[test]
    fn duplicate_and_malformed_cookies_count_as_none() {
        let (a, b) = (Id::random().unwrap(), Id::random().unwrap());
        let config = Config::default();
        let dup = format!("id={}; id={}", a.expose_secret(), b.expose_secret());
        assert!(read_id(&config, &headers(&[("cookie", dup.as_bytes())]))
            .0
            .is_none());
        let same_twice = format!("id={0}; id={0}", a.expose_secret());
        let map = headers(&[("cookie", same_twice.as_bytes())]);
        assert!(read_id(&config, &map).0.is_none());
        let (first, second) = (
            format!("id={}", a.expose_secret()),
            format!("id={}", b.expose_secret()),
        );
        let across = headers(&[("cookie", first.as_bytes()), ("cookie", second.as_bytes())]);
        assert!(
            read_id(&config, &across).0.is_none(),
            "a duplicate in another header"
        );
        let big = format!("id={}", "A".repeat(8192));
        assert!(read_id(&config, &headers(&[("cookie", big.as_bytes())]))
            .0
            .is_none());
        let binary: &[u8] = b"id=\xff\xfe\xfd";
        assert!(read_id(&config, &headers(&[("cookie", binary)]))
            .0
            .is_none());
        let quoted = format!("id=\"{}\"", a.expose_secret());
        assert!(read_id(&config, &headers(&[("cookie", quoted.as_bytes())]))
            .0
            .is_none());
    }

    #[test]
    fn the_header_makes_a_header_client_even_when_empty_or_bad() {
        let config = Config::default();
        let (id, transport) = read_id(&config, &headers(&[("x-session-id", b"")]));
        assert!(id.is_none());
        assert_eq!(transport, Transport::Header);
        let good = Id::random().unwrap().expose_secret();
        let map = headers(&[("x-session-id", good.as_bytes())]);
        assert_eq!(read_id(&config, &map).0.unwrap().expose_secret(), good);
        let twice = headers(&[
            ("x-session-id", good.as_bytes()),
            ("x-session-id", good.as_bytes()),
        ]);
        assert!(read_id(&config, &twice).0.is_none());
    }

    #[test]
    fn without_the_header_transport_the_header_is_ignored() {
        let config = Config {
            header: None,
            ..Config::default()
        };
        let good = Id::random().unwrap().expose_secret();
        let (id, transport) = read_id(&config, &headers(&[("x-session-id", good.as_bytes())]));
        assert!(id.is_none());
        assert_eq!(transport, Transport::Cookie);
    }

    #[test]
    fn host_prefixed_cookie_is_read_by_its_full_name() {
        let mut config = Config::default();
        config.set_cookie_name("id", true);
        let id = Id::random().unwrap().expose_secret();
        let plain = format!("id={id}");
        assert!(read_id(&config, &headers(&[("cookie", plain.as_bytes())]))
            .0
            .is_none());
        let prefixed = format!("__Host-id={id}");
        let map = headers(&[("cookie", prefixed.as_bytes())]);
        assert!(read_id(&config, &map).0.is_some());
    }
}
