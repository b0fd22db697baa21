//! The layer's behaviour seen from HTTP: requests through an axum router with
//! `tower::ServiceExt::oneshot`, over a real `MemoryStore` (counted, and with faults
//! injected where a test needs a failing store).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get as get_route;
use axum::Router;
use common::{get, send, Fault, Instrumented};
use http::{Request, StatusCode};
use serde_json::json;
use sessionware::{
    Delta, ErrorKind, Id, MemoryStore, Record, SameSite, Session, SessionLayer, SessionStore,
};
use time::{Duration, OffsetDateTime};

type Store = Instrumented<MemoryStore>;

fn store() -> Store {
    Instrumented::new(MemoryStore::new())
}

/// Routes that exercise the session API: each returns its result as text, and a session
/// error as the error's own response (so `?` is what is tested).
fn routes() -> Router {
    Router::new()
        .route("/untouched", get_route(|| async { "no session here" }))
        .route(
            "/get/{key}",
            get_route(|session: Session, Path(key): Path<String>| async move {
                session
                    .get::<serde_json::Value>(&key)
                    .await
                    .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
            }),
        )
        .route(
            "/get-number/{key}",
            get_route(|session: Session, Path(key): Path<String>| async move {
                session.get::<u64>(&key).await.map(|v| format!("{v:?}"))
            }),
        )
        .route(
            "/set/{key}/{value}",
            get_route(
                |session: Session, Path((key, value)): Path<(String, String)>| async move {
                    session.insert(&key, value).await.map(|_| "saved")
                },
            ),
        )
        .route(
            "/login/{user}",
            get_route(|session: Session, Path(user): Path<String>| async move {
                session.login(user).await.map(|_| "logged in")
            }),
        )
        .route(
            "/logout",
            get_route(|session: Session| async move { session.logout().await.map(|_| "bye") }),
        )
        .route(
            "/logout-then-set",
            get_route(|session: Session| async move {
                session.logout().await?;
                session.insert("flash", "logged out").await.map(|_| "bye")
            }),
        )
        .route(
            "/cycle",
            get_route(|session: Session| async move { session.cycle_id().await.map(|_| "new id") }),
        )
        .route(
            "/whoami",
            get_route(|session: Session| async move {
                session.user_id().await.map(|u| u.unwrap_or_default())
            }),
        )
        .route(
            "/remember",
            get_route(|session: Session| async move {
                session.set_remember_me(true).await.map(|_| "remembered")
            }),
        )
        .route(
            "/revoke-others",
            get_route(|session: Session| async move {
                session.revoke_other_sessions().await.map(|n| n.to_string())
            }),
        )
        .route(
            "/revoke/{key}",
            get_route(|session: Session, Path(key): Path<String>| async move {
                let key = key.parse().expect("a key from a listing");
                session.revoke_session(&key).await.map(|ok| ok.to_string())
            }),
        )
        .route(
            "/devices",
            get_route(|session: Session| async move {
                let devices = session.user_sessions().await?;
                Ok::<_, sessionware::Error>(axum::Json(devices))
            }),
        )
        .route(
            "/cached",
            get_route(|session: Session| async move {
                session.insert("k", "v").await?;
                Ok::<_, sessionware::Error>(
                    ([("cache-control", "private, max-age=60")], "cached").into_response(),
                )
            }),
        )
}

fn app_with(layer: SessionLayer) -> Router {
    routes().layer(layer)
}

fn app(store: &Store) -> Router {
    app_with(SessionLayer::new(store.clone()))
}

async fn new_session(app: &Router) -> String {
    let reply = send(app, get("/set/seed/0", None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.cookie("id").expect("a new session sets a cookie")
}

/// A new session, logged in as `user`: the ID its login handed out.
async fn logged_in(app: &Router, user: &str) -> String {
    let id = new_session(app).await;
    let login = send(app, get(&format!("/login/{user}"), Some(&id))).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    login.cookie("id").expect("a login hands out a new ID")
}

/// Asserts that `reply` tells the client to forget its session cookie.
fn assert_cookie_removed(reply: &common::Reply) {
    let cookie = reply.set_cookie("id").expect("a removal cookie");
    assert!(
        cookie.starts_with("id=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
}

fn hash(id: &str) -> sessionware::IdHash {
    Id::parse(id.as_bytes()).expect("a well-formed ID").hash()
}

/// A router with one route, `/race`, that runs `handler` under `layer`: for races staged
/// inside a handler, with another request's store call made between load and save.
fn race_router<H, T>(layer: SessionLayer, handler: H) -> Router
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    Router::new()
        .route("/race", get_route(handler))
        .layer(layer)
}

/// Loads `session`, then deletes its record behind its back, as a concurrent logout or
/// revocation would. Returns the deleted record's key.
async fn end_behind_its_back(
    session: &Session,
    store: &Store,
) -> Result<sessionware::IdHash, sessionware::Error> {
    session.get::<String>("seed").await?;
    let key = session.info().await?.unwrap().key;
    store.inner.delete(&key).await?;
    Ok(key)
}

// ---- 1. Lazy ----

#[tokio::test]
async fn untouched_session_costs_no_store_call_and_sets_no_cookie() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let before = store.counts.total();
    for cookie in [None, Some(id.as_str())] {
        let reply = send(&app, get("/untouched", cookie)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.headers.get("set-cookie").is_none());
        assert!(reply.headers.get("cache-control").is_none());
    }
    assert_eq!(
        store.counts.total(),
        before,
        "an untouched session called the store"
    );
}

#[tokio::test]
async fn reading_a_session_writes_nothing() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    for _ in 0..10 {
        let reply = send(&app, get("/get/seed", Some(&id))).await;
        assert_eq!(reply.body, "\"0\"");
        assert!(reply.headers.get("set-cookie").is_none());
    }
    assert_eq!(
        store.counts.loads.load(Ordering::SeqCst),
        10,
        "one load per request"
    );
    assert_eq!(
        store.counts.applies.load(Ordering::SeqCst),
        0,
        "a read wrote"
    );
    assert_eq!(store.counts.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reading_without_a_session_creates_nothing() {
    let store = store();
    let app = app(&store);
    let reply = send(&app, get("/get/anything", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.get("set-cookie").is_none());
    assert_eq!(store.counts.total(), 0, "no ID: nothing to load or write");
    assert_eq!(store.inner.count().await.unwrap(), 0);
}

// ---- 2. IDs ----

#[tokio::test]
async fn new_ids_are_256_bit_url_safe_and_stored_only_as_a_hash() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    assert_eq!(id.len(), 43);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let record = store.inner.load(&hash(&id)).await.unwrap();
    assert!(record.is_some(), "the record is filed under the ID's hash");
    // What operators see of a session is its hash, never the credential.
    let id = send(&app, get("/login/ann", Some(&id)))
        .await
        .cookie("id")
        .unwrap();
    let listing = send(&app, get("/devices", Some(&id))).await.body;
    assert!(
        listing.contains(&format!("\"key\":\"{}\"", hash(&id))),
        "{listing}"
    );
    assert!(!listing.contains(&id), "the raw ID is listed: {listing}");
}

#[tokio::test]
async fn malformed_ids_are_rejected_before_any_store_call() {
    let store = store();
    let app = app(&store);
    let good = new_session(&app).await;
    let loads_before = store.counts.loads.load(Ordering::SeqCst);
    let cookies: Vec<Vec<u8>> = vec![
        b"id=".to_vec(),
        b"id=short".to_vec(),
        format!("id={good}x").into_bytes(),
        format!("id={}", &good[..42]).into_bytes(),
        format!("id={}+", &good[..42]).into_bytes(),
        format!("id={}", "A".repeat(16 * 1024)).into_bytes(),
        [
            b"id=".as_slice(),
            &[0xC3, 0x28, 0xA0, 0xA1],
            &good.as_bytes()[4..],
        ]
        .concat(),
        format!("id={good}; id={good}").into_bytes(),
        format!("id=\"{good}\"").into_bytes(),
        b"=;;;==; id".to_vec(),
    ];
    for cookie in cookies {
        let request = Request::get("/get/seed")
            .header("cookie", http::HeaderValue::from_bytes(&cookie).unwrap())
            .body(Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{cookie:?}");
        assert_eq!(reply.body, "", "a malformed ID read a session: {cookie:?}");
        assert!(reply.headers.get("set-cookie").is_none());
    }
    for header in [
        b"".as_slice(),
        b"nope",
        &[0xFF, 0xFE],
        &good.as_bytes()[..20],
    ] {
        let request = Request::get("/get/seed")
            .header(
                "x-session-id",
                http::HeaderValue::from_bytes(header).unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, request).await.status, StatusCode::OK);
    }
    assert_eq!(
        store.counts.loads.load(Ordering::SeqCst),
        loads_before,
        "a malformed ID reached the store"
    );
}

// ---- 3. Strict mode ----

#[tokio::test]
async fn an_unknown_id_is_never_adopted() {
    let store = store();
    let app = app(&store);
    let planted = Id::random().unwrap().expose_secret();
    let reply = send(&app, get("/set/k/v", Some(&planted))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let issued = reply.cookie("id").expect("a new session");
    assert_ne!(issued, planted, "the server adopted a client-chosen ID");
    assert!(store.inner.load(&hash(&planted)).await.unwrap().is_none());
    assert!(store.inner.load(&hash(&issued)).await.unwrap().is_some());
}

#[tokio::test]
async fn an_unknown_id_in_the_header_is_never_adopted() {
    let store = store();
    let app = app(&store);
    let planted = Id::random().unwrap().expose_secret();
    let request = Request::get("/set/k/v")
        .header("x-session-id", &planted)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let issued = reply.headers["x-session-id"].to_str().unwrap().to_owned();
    assert_ne!(issued, planted, "the server adopted a client-chosen ID");
    assert!(
        reply.headers.get("set-cookie").is_none(),
        "a header client got a cookie"
    );
    assert!(store.inner.load(&hash(&planted)).await.unwrap().is_none());
    assert!(store.inner.load(&hash(&issued)).await.unwrap().is_some());
}

// ---- 4. Cookies ----

#[tokio::test]
async fn cookie_has_secure_defaults_and_no_store() {
    let app = app(&store());
    let reply = send(&app, get("/set/k/v", None)).await;
    let cookie = reply.set_cookie("id").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_handlers_own_cache_control_is_kept() {
    let app = app(&store());
    let reply = send(&app, get("/cached", None)).await;
    assert!(reply.set_cookie("id").is_some());
    assert_eq!(reply.headers["cache-control"], "private, max-age=60");
}

#[tokio::test]
async fn cookie_settings_are_applied() {
    let layer = SessionLayer::new(store())
        .with_cookie_name("sid")
        .with_host_prefix(true)
        .with_same_site(SameSite::Strict);
    let app = app_with(layer);
    let reply = send(&app, get("/set/k/v", None)).await;
    let cookie = reply.set_cookie("__Host-sid").expect("a __Host- cookie");
    assert!(cookie.contains("SameSite=Strict") && cookie.contains("Secure"));
    assert!(!cookie.contains("Domain"));
    let id = reply.cookie("__Host-sid").unwrap();
    let request = Request::get("/get/k")
        .header("cookie", format!("__Host-sid={id}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.body, "\"v\"");

    let custom = SessionLayer::new(store())
        .with_path("/app")
        .with_domain("example.com")
        .with_http_only(false)
        .with_secure(false);
    let reply = send(&app_with(custom), get("/set/k/v", None)).await;
    let cookie = reply.set_cookie("id").unwrap();
    assert!(cookie.contains("Path=/app") && cookie.contains("Domain=example.com"));
    assert!(
        !cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );
}

#[test]
#[should_panic(expected = "__Host-")]
fn a_host_prefixed_cookie_must_be_secure() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_host_prefix(true)
        .with_secure(false);
    let _ = routes().layer(layer);
}

#[test]
#[should_panic(expected = "Path=/")]
fn a_host_prefixed_cookie_must_have_the_root_path() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_host_prefix(true)
        .with_path("/app");
    let _ = routes().layer(layer);
}

#[test]
#[should_panic(expected = "no Domain")]
fn a_host_prefixed_cookie_must_have_no_domain() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_host_prefix(true)
        .with_domain("example.com");
    let _ = routes().layer(layer);
}

#[test]
#[should_panic(expected = "invalid session cookie name")]
fn an_invalid_cookie_name_is_refused() {
    let _ = SessionLayer::new(MemoryStore::new()).with_cookie_name("bad name;");
}

#[tokio::test]
async fn remember_me_makes_a_persistent_cookie_matching_the_deadline() {
    let store = store();
    let layer = SessionLayer::new(store.clone())
        .with_remember_me_timeouts(Duration::days(14), Duration::days(60));
    let app = app_with(layer);
    let id = new_session(&app).await;
    let reply = send(&app, get("/remember", Some(&id))).await;
    let cookie = reply.set_cookie("id").expect("the cookie is sent again");
    assert_eq!(reply.cookie("id").unwrap(), id, "remember-me keeps the ID");
    let max_age: i64 = cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a persistent cookie")
        .parse()
        .unwrap();
    let record = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert!(record.remember_me);
    let server_left = (record.expires_at() - OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (server_left - max_age).abs() <= 2,
        "{max_age} vs {server_left}"
    );
    assert!(max_age >= Duration::days(14).whole_seconds());
}

/// `Max-Age` of a `Set-Cookie` value.
fn max_age(cookie: &str) -> i64 {
    cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a persistent cookie")
        .parse()
        .unwrap()
}

/// A layer whose remember-me sessions refresh after one second of use.
fn fast_refreshing_remember_me(store: &Store) -> SessionLayer {
    SessionLayer::new(store.clone())
        .with_remember_me_timeouts(Duration::seconds(4), Duration::hours(1))
        .with_idle_refresh_step(Duration::seconds(1))
}

#[tokio::test]
async fn a_refreshed_remember_me_session_gets_its_cookie_again_with_the_new_max_age() {
    let store = store();
    let app = app_with(fast_refreshing_remember_me(&store));
    let id = new_session(&app).await;
    send(&app, get("/remember", Some(&id))).await;
    let before = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    let early = send(&app, get("/get/seed", Some(&id))).await;
    assert_eq!(
        early.set_cookie("id"),
        None,
        "no refresh due yet, no cookie"
    );
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let reply = send(&app, get("/get/seed", Some(&id))).await;
    let cookie = reply
        .set_cookie("id")
        .expect("the refresh re-sends the cookie");
    assert_eq!(reply.cookie("id").unwrap(), id, "same ID");
    let after = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert!(
        after.expires_at() > before.expires_at(),
        "the deadline moved"
    );
    let server_left = (after.expires_at() - OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (server_left - max_age(&cookie)).abs() <= 1,
        "Max-Age {} vs {server_left} s left on the server",
        max_age(&cookie)
    );
}

#[tokio::test]
async fn a_refresh_that_finds_its_session_rotated_away_sends_no_cookie() {
    let store = store();
    let layer = fast_refreshing_remember_me(&store);
    let app = app_with(layer.clone());
    let id = new_session(&app).await;
    send(&app, get("/remember", Some(&id))).await;
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let store_behind = store.clone();
    let racing = race_router(layer, move |session: Session| async move {
        // This read is due a refresh; meanwhile another request logs in, which moves the
        // session to a new ID.
        session.get::<String>("seed").await?;
        let key = session.info().await?.unwrap().key;
        let rotated_to = Id::random()?.hash();
        let unchanged = Default::default();
        store_behind
            .inner
            .rotate(&key, &rotated_to, &unchanged)
            .await?;
        Ok::<_, sessionware::Error>("read")
    });
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::OK, "a read needs no saving");
    assert_eq!(
        reply.set_cookie("id"),
        None,
        "the dead ID's cookie would overwrite the rotated one"
    );
}

/// A logout that finds its session rotated away (a login in another tab moved it) ended
/// nothing: the session lives on under its new ID. It is refused, with no removal cookie
/// that could overwrite the new one, and the client's retry with the new ID ends it.
#[tokio::test]
async fn a_logout_that_finds_its_session_rotated_away_is_a_409_and_its_retry_ends_it() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let rotated_to = Id::random().unwrap();
    let to = rotated_to.hash();
    let store_behind = store.clone();
    let racing = race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            session.get::<String>("seed").await?;
            let key = session.info().await?.unwrap().key;
            let mut login = Delta::default();
            login.user_id = Some(Some("ann".to_owned()));
            assert!(store_behind.inner.rotate(&key, &to, &login).await?);
            session.logout().await.map(|_| "bye")
        },
    );
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(
        reply.set_cookie("id"),
        None,
        "a removal cookie could overwrite the rotated one"
    );
    let survivor = store.inner.load(&to).await.unwrap();
    assert_eq!(survivor.unwrap().user_id.as_deref(), Some("ann"));
    let retry = send(&app, get("/logout", Some(&rotated_to.expose_secret()))).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_cookie_removed(&retry);
    assert!(
        store.inner.load(&to).await.unwrap().is_none(),
        "still alive"
    );
}

/// A request that arrived before its session was rotated away, and would start a new
/// session, is refused however small the grace: its client may not have the new ID yet.
#[tokio::test]
async fn a_request_that_arrived_before_a_rotation_cannot_start_a_session_over_it() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let key = hash(&id);
    let store_behind = store.clone();
    let layer = SessionLayer::new(store.clone()).with_rotation_grace(Duration::ZERO);
    let racing = race_router(layer, move |session: Session| async move {
        // Before this handler touches its session, another request rotates it.
        let to = Id::random()?.hash();
        assert!(
            store_behind
                .inner
                .rotate(&key, &to, &Delta::default())
                .await?
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        session.insert("late", "write").await.map(|_| "saved")
    });
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(
        reply.set_cookie("id"),
        None,
        "it would overwrite the rotated cookie"
    );
}

/// A client whose login response was lost still holds the old ID. Within the rotation
/// grace its requests are refused, as if in flight during the rotation; after it, they
/// start a new session instead of a 409 on every try until the store forgets the rotation.
/// (Two layers over one store: a long grace for the request within it, so that a slow
/// machine cannot push that request past it.)
#[tokio::test]
async fn a_client_that_lost_its_rotated_id_gets_a_new_session_after_the_grace() {
    let store = store();
    let patient =
        app_with(SessionLayer::new(store.clone()).with_rotation_grace(Duration::minutes(1)));
    let layer = SessionLayer::new(store.clone()).with_rotation_grace(Duration::milliseconds(300));
    let app = app_with(layer);
    let id = new_session(&app).await;
    let rotated_to = Id::random().unwrap().hash();
    assert!(store
        .inner
        .rotate(&hash(&id), &rotated_to, &Delta::default())
        .await
        .unwrap());
    let early = send(&patient, get("/set/k/v", Some(&id))).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    assert_eq!(early.set_cookie("id"), None);
    // A grace reaching past the earliest date there is refuses too (and does not panic).
    let forever = app_with(SessionLayer::new(store.clone()).with_rotation_grace(Duration::MAX));
    let refused = send(&forever, get("/set/k/v", Some(&id))).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    let late = send(&app, get("/set/k/v", Some(&id))).await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    let fresh = late.cookie("id").expect("a new session's cookie");
    assert_ne!(fresh, id, "the dead ID was adopted");
    let record = store.inner.load(&hash(&fresh)).await.unwrap().unwrap();
    assert_eq!(record.data["k"], "v");
    assert!(
        store.inner.load(&rotated_to).await.unwrap().is_some(),
        "the rotated session is untouched"
    );
}

#[tokio::test]
async fn a_remember_me_switch_on_a_session_ended_meanwhile_is_a_409() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let store_behind = store.clone();
    let racing = race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            end_behind_its_back(&session, &store_behind).await?;
            session.set_remember_me(true).await.map(|_| "remembered")
        },
    );
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.set_cookie("id"), None);
    assert!(store.inner.load(&hash(&id)).await.unwrap().is_none());
}

// ---- 5. Header transport ----

#[tokio::test]
async fn header_clients_get_their_id_in_the_header_for_the_whole_session() {
    let store = store();
    let app = app(&store);
    let first = Request::get("/set/k/v")
        .header("x-session-id", "")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, first).await;
    assert!(
        reply.headers.get("set-cookie").is_none(),
        "a header client got a cookie"
    );
    let id = reply.headers["x-session-id"].to_str().unwrap().to_owned();
    assert_eq!(reply.headers["cache-control"], "no-store");

    let with_header = |path: &str, id: &str| {
        Request::get(path)
            .header("x-session-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let read = send(&app, with_header("/get/k", &id)).await;
    assert_eq!(read.body, "\"v\"");
    assert!(
        read.headers.get("x-session-id").is_none(),
        "an unchanged ID is not resent"
    );

    let login = send(&app, with_header("/login/ann", &id)).await;
    let rotated = login.headers["x-session-id"].to_str().unwrap().to_owned();
    assert_ne!(rotated, id);
    assert!(login.headers.get("set-cookie").is_none());
    assert_eq!(
        send(&app, with_header("/whoami", &rotated)).await.body,
        "ann"
    );
    assert_eq!(send(&app, with_header("/whoami", &id)).await.body, "");
}

#[tokio::test]
async fn the_header_transport_can_be_renamed_or_turned_off() {
    let renamed = app_with(SessionLayer::new(store()).with_header_name("x-token"));
    let first = Request::get("/set/k/v")
        .header("x-token", "")
        .body(Body::empty())
        .unwrap();
    assert!(send(&renamed, first).await.headers.get("x-token").is_some());

    let off = app_with(SessionLayer::new(store()).without_header());
    let first = Request::get("/set/k/v")
        .header("x-session-id", "")
        .body(Body::empty())
        .unwrap();
    let reply = send(&off, first).await;
    assert!(reply.headers.get("x-session-id").is_none());
    assert!(reply.set_cookie("id").is_some(), "falls back to the cookie");
}

// ---- 6. Expiry ----

#[tokio::test]
async fn idle_timeout_ends_an_unused_session_but_not_a_used_one() {
    let layer = SessionLayer::new(store())
        .with_idle_timeout(Duration::milliseconds(1200))
        .with_idle_refresh_step(Duration::milliseconds(200));
    let app = app_with(layer);
    let id = new_session(&app).await;
    for _ in 0..5 {
        tokio::time::sleep(StdDuration::from_millis(900)).await;
        let reply = send(&app, get("/get/seed", Some(&id))).await;
        assert_eq!(
            reply.body, "\"0\"",
            "a session used within its idle timeout ended"
        );
    }
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    assert_eq!(
        send(&app, get("/get/seed", Some(&id))).await.body,
        "",
        "idle session lived"
    );
}

#[tokio::test]
async fn absolute_timeout_ends_a_session_however_much_it_is_used() {
    let layer = SessionLayer::new(store())
        .with_idle_timeout(Duration::minutes(10))
        .with_absolute_timeout(Duration::milliseconds(1500));
    let app = app_with(layer);
    let id = new_session(&app).await;
    for _ in 0..4 {
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
    }
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "");
}

/// A session 300 ms old, stored under the default timeouts, has ended for a layer on the
/// same store whose timeouts `lower` cut below its age, and lives on under the defaults.
async fn assert_lowered_timeouts_end_an_older_session(lower: fn(SessionLayer) -> SessionLayer) {
    let store = store();
    let generous = app_with(SessionLayer::new(store.clone()));
    let id = new_session(&generous).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let strict = app_with(lower(SessionLayer::new(store.clone())));
    assert_eq!(
        send(&strict, get("/get/seed", Some(&id))).await.body,
        "",
        "outlived the new limit"
    );
    assert_eq!(
        send(&generous, get("/get/seed", Some(&id))).await.body,
        "\"0\""
    );
}

#[tokio::test]
async fn lowering_the_absolute_timeout_ends_older_sessions_at_once() {
    assert_lowered_timeouts_end_an_older_session(|layer| {
        layer.with_absolute_timeout(Duration::milliseconds(200))
    })
    .await;
}

#[tokio::test]
async fn lowering_the_idle_timeout_ends_sessions_idle_longer_than_the_new_one() {
    assert_lowered_timeouts_end_an_older_session(|layer| {
        layer
            .with_idle_timeout(Duration::milliseconds(200))
            .with_idle_refresh_step(Duration::ZERO)
    })
    .await;
}

#[tokio::test]
async fn a_session_in_use_outlives_a_lowered_idle_timeout() {
    let store = store();
    let generous = app_with(SessionLayer::new(store.clone()));
    let id = new_session(&generous).await;
    let strict = app_with(
        SessionLayer::new(store.clone())
            .with_idle_timeout(Duration::milliseconds(400))
            .with_idle_refresh_step(Duration::ZERO),
    );
    // Used every 150 ms for well over the new idle timeout: it must slide under it.
    for _ in 0..8 {
        tokio::time::sleep(StdDuration::from_millis(150)).await;
        assert_eq!(
            send(&strict, get("/get/seed", Some(&id))).await.body,
            "\"0\"",
            "a session used within the new idle timeout ended"
        );
    }
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    assert_eq!(send(&strict, get("/get/seed", Some(&id))).await.body, "");
}

#[tokio::test]
async fn switching_remember_me_on_counts_its_idle_timeout_from_the_switch() {
    // The default refresh steps: the standard session is not refreshed by the switching
    // request (a step of zero would refresh it, and count from then anyway).
    let app = app_with(
        SessionLayer::new(store())
            .with_remember_me_timeouts(Duration::milliseconds(600), Duration::hours(1)),
    );
    let id = new_session(&app).await;
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    assert_eq!(
        send(&app, get("/remember", Some(&id))).await.body,
        "remembered"
    );
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    assert_eq!(
        send(&app, get("/get/seed", Some(&id))).await.body,
        "\"0\"",
        "ended before the idle deadline its cookie was given"
    );
}

#[tokio::test]
async fn timeouts_as_long_as_duration_max_mean_no_limit_not_a_panic() {
    let store = store();
    let layer = SessionLayer::new(store.clone())
        .with_idle_timeout(Duration::MAX)
        .with_absolute_timeout(Duration::MAX)
        .with_remember_me_timeouts(Duration::MAX, Duration::MAX);
    let app = app_with(layer);
    let id = new_session(&app).await;
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
    let remembered = send(&app, get("/remember", Some(&id))).await;
    assert_eq!(remembered.status, StatusCode::OK);
    assert!(max_age(&remembered.set_cookie("id").unwrap()) > 100 * 365 * 86_400);
    let login = send(&app, get("/login/ann", Some(&id))).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let id = login.cookie("id").unwrap();
    assert_eq!(send(&app, get("/whoami", Some(&id))).await.body, "ann");
}

#[tokio::test]
async fn a_stored_record_at_the_end_of_time_is_served_not_a_panic() {
    let store = store();
    let app = app(&store);
    // 9999-12-31T23:59:59Z, the last second `time` holds by default: adding any timeout
    // to it overflows.
    let end = OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap();
    let mut record = Record::new(end, end, end);
    record.data.insert("seed".into(), json!("far"));
    let id = Id::random().unwrap();
    assert!(store.inner.create(&id.hash(), &record).await.unwrap());
    let id = id.expose_secret();
    let read = send(&app, get("/get/seed", Some(&id))).await;
    assert_eq!(
        (read.status, read.body.as_str()),
        (StatusCode::OK, "\"far\"")
    );
    let write = send(&app, get("/set/seed/near", Some(&id))).await;
    assert_eq!(write.status, StatusCode::OK, "{}", write.body);
    assert_eq!(
        send(&app, get("/get/seed", Some(&id))).await.body,
        "\"near\""
    );
}

#[tokio::test]
async fn reads_extend_the_deadline_at_most_once_per_refresh_step() {
    let store = store();
    let layer = SessionLayer::new(store.clone())
        .with_idle_timeout(Duration::seconds(2))
        .with_idle_refresh_step(Duration::seconds(1));
    let app = app_with(layer);
    let id = new_session(&app).await;
    let created = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    for _ in 0..5 {
        send(&app, get("/get/seed", Some(&id))).await;
    }
    assert_eq!(
        store.counts.applies.load(Ordering::SeqCst),
        0,
        "reads within a step wrote"
    );
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    for _ in 0..5 {
        send(&app, get("/get/seed", Some(&id))).await;
    }
    assert_eq!(
        store.counts.applies.load(Ordering::SeqCst),
        1,
        "one extension per step"
    );
    let extended = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert!(extended.idle_deadline > created.idle_deadline);
    assert!(extended.last_seen > created.last_seen);
}

// ---- 7. Rotation ----

#[tokio::test]
async fn login_rotates_the_id_and_kills_the_old_one() {
    let store = store();
    let app = app(&store);
    let anonymous = new_session(&app).await;
    let reply = send(&app, get("/login/ann", Some(&anonymous))).await;
    let id = reply.cookie("id").expect("a new ID at login");
    assert_ne!(id, anonymous);
    assert_eq!(send(&app, get("/whoami", Some(&id))).await.body, "ann");
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
    assert_eq!(send(&app, get("/whoami", Some(&anonymous))).await.body, "");
    assert!(store.inner.load(&hash(&anonymous)).await.unwrap().is_none());
}

#[tokio::test]
async fn logging_in_as_another_user_drops_the_previous_users_data() {
    let app = app(&store());
    let ann = logged_in(&app, "ann").await;
    assert_eq!(
        send(&app, get("/get/seed", Some(&ann))).await.body,
        "\"0\"",
        "kept at login"
    );
    send(&app, get("/set/secret/ann-only", Some(&ann))).await;
    let again = send(&app, get("/login/ann", Some(&ann)))
        .await
        .cookie("id")
        .unwrap();
    assert_eq!(
        send(&app, get("/get/secret", Some(&again))).await.body,
        "\"ann-only\""
    );
    let bob = send(&app, get("/login/bob", Some(&again)))
        .await
        .cookie("id")
        .unwrap();
    assert_eq!(send(&app, get("/whoami", Some(&bob))).await.body, "bob");
    assert_eq!(
        send(&app, get("/get/secret", Some(&bob))).await.body,
        "",
        "ann's data leaked"
    );
}

#[tokio::test]
async fn cycle_id_keeps_data_and_user_under_a_new_id() {
    let app = app(&store());
    let id = logged_in(&app, "ann").await;
    let cycled = send(&app, get("/cycle", Some(&id)))
        .await
        .cookie("id")
        .unwrap();
    assert_ne!(cycled, id);
    assert_eq!(send(&app, get("/whoami", Some(&cycled))).await.body, "ann");
    assert_eq!(
        send(&app, get("/get/seed", Some(&cycled))).await.body,
        "\"0\""
    );
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "");
}

#[tokio::test]
async fn logout_destroys_the_record_and_expires_the_cookie() {
    let store = store();
    let app = app(&store);
    let id = logged_in(&app, "ann").await;
    let reply = send(&app, get("/logout", Some(&id))).await;
    assert_cookie_removed(&reply);
    assert!(store.inner.load(&hash(&id)).await.unwrap().is_none());
    assert_eq!(store.inner.count_user("ann").await.unwrap(), 0);
    assert_eq!(send(&app, get("/whoami", Some(&id))).await.body, "");
}

#[tokio::test]
async fn a_value_set_after_logout_lands_in_a_fresh_session() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let reply = send(&app, get("/logout-then-set", Some(&id))).await;
    let fresh = reply
        .cookie("id")
        .expect("a new session for the flash message");
    assert!(!fresh.is_empty() && fresh != id);
    assert!(store.inner.load(&hash(&id)).await.unwrap().is_none());
    assert_eq!(
        send(&app, get("/get/flash", Some(&fresh))).await.body,
        "\"logged out\""
    );
    assert_eq!(send(&app, get("/get/seed", Some(&fresh))).await.body, "");
}

// ---- 9. Failing stores ----

#[tokio::test]
async fn an_unreachable_store_is_a_generic_503() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::Unavailable);
    let reply = send(&app, get("/get/seed", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.body.contains("10.9.8.7"),
        "internals leaked: {}",
        reply.body
    );
    assert!(reply.headers.get("set-cookie").is_none());
    store.set_fault(Fault::Failing);
    let reply = send(&app, get("/get/seed", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !reply.body.contains("sessions_secret"),
        "internals leaked: {}",
        reply.body
    );
    store.set_fault(Fault::None);
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
}

#[tokio::test]
async fn a_failed_save_replaces_the_handlers_success() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::WritesUnavailable);
    let reply = send(&app, get("/set/k/v", Some(&id))).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_ne!(reply.body, "saved");
    let fresh = send(&app, get("/set/k/v", None)).await;
    assert_eq!(fresh.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        fresh.headers.get("set-cookie").is_none(),
        "a cookie for an unsaved session"
    );
    store.set_fault(Fault::None);
    assert_eq!(send(&app, get("/get/k", Some(&id))).await.body, "");
}

#[tokio::test]
async fn a_login_or_logout_that_cannot_be_saved_changes_nothing() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::WritesUnavailable);
    for path in ["/login/ann", "/logout", "/cycle"] {
        let reply = send(&app, get(path, Some(&id))).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            reply.set_cookie("id"),
            None,
            "{path}: a cookie for an unsaved change"
        );
    }
    store.set_fault(Fault::None);
    assert_eq!(
        send(&app, get("/get/seed", Some(&id))).await.body,
        "\"0\"",
        "the session survives, under its old ID"
    );
    assert_eq!(send(&app, get("/whoami", Some(&id))).await.body, "");
}

/// An app whose store calls time out after 100 ms.
fn app_with_short_store_timeout(store: &Store) -> Router {
    app_with(SessionLayer::new(store.clone()).with_store_timeout(StdDuration::from_millis(100)))
}

/// Sends `request` to a store that hangs: the answer must be a 503, and come from the
/// timeout, not from the store giving up a minute later.
async fn send_timing_out(app: &Router, request: Request<Body>) -> common::Reply {
    let started = std::time::Instant::now();
    let reply = send(app, request).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < StdDuration::from_secs(5),
        "the timeout did not fire"
    );
    reply
}

#[tokio::test]
async fn a_hanging_store_times_out_as_a_503() {
    let store = store();
    let app = app_with_short_store_timeout(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::Hanging);
    send_timing_out(&app, get("/get/seed", Some(&id))).await;
}

#[tokio::test]
async fn a_save_the_store_refuses_is_a_generic_500_and_saves_nothing() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::WritesFailing);
    let reply = send(&app, get("/set/k/v", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_ne!(reply.body, "saved", "a success for an unsaved change");
    assert!(
        !reply.body.contains("sessions_secret"),
        "internals leaked: {}",
        reply.body
    );
    let fresh = send(&app, get("/set/k/v", None)).await;
    assert_eq!(fresh.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        fresh.set_cookie("id"),
        None,
        "a cookie for an unsaved session"
    );
    // Reads still work while writes fail, and a read that need not write succeeds.
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
    store.set_fault(Fault::None);
    assert_eq!(send(&app, get("/get/k", Some(&id))).await.body, "");
    assert_eq!(
        store.inner.count().await.unwrap(),
        1,
        "the failed new session was stored"
    );
}

#[tokio::test]
async fn a_save_that_hangs_times_out_as_a_503_and_saves_nothing() {
    let store = store();
    let app = app_with_short_store_timeout(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::WritesHanging);
    let reply = send_timing_out(&app, get("/set/k/v", Some(&id))).await;
    assert_ne!(reply.body, "saved", "a success for an unsaved change");
    let login = send_timing_out(&app, get("/login/ann", Some(&id))).await;
    assert_eq!(
        login.set_cookie("id"),
        None,
        "a cookie for an unsaved login"
    );
    store.set_fault(Fault::None);
    assert_eq!(send(&app, get("/get/k", Some(&id))).await.body, "");
    assert_eq!(send(&app, get("/whoami", Some(&id))).await.body, "");
}

#[tokio::test]
async fn users_shape_error_responses_for_handler_and_save_errors() {
    let store = store();
    let layer = SessionLayer::new(store.clone()).with_error_response(|err| {
        http::Response::builder()
            .status(err.status())
            .header("content-type", "application/json")
            .body(json!({"error": format!("{:?}", err.kind())}).to_string())
            .unwrap()
    });
    let app = app_with(layer);
    let id = new_session(&app).await;
    store.set_fault(Fault::Unavailable);
    let load_failure = send(&app, get("/get/seed", Some(&id))).await;
    assert_eq!(load_failure.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(load_failure.body, r#"{"error":"StoreUnavailable"}"#);
    store.set_fault(Fault::WritesUnavailable);
    let save_failure = send(&app, get("/set/k/v", Some(&id))).await;
    assert_eq!(save_failure.body, r#"{"error":"StoreUnavailable"}"#);
    assert_eq!(save_failure.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_change_to_a_session_ended_meanwhile_is_a_409_not_a_resurrection() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let store_behind = store.clone();
    let racing = race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            // Another request logs this session out while we work.
            end_behind_its_back(&session, &store_behind).await?;
            session.insert("late", "write").await.map(|_| "saved")
        },
    );
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        store.inner.load(&hash(&id)).await.unwrap().is_none(),
        "resurrected"
    );
}

// ---- 10. Per-user operations through the session ----

#[tokio::test]
async fn users_list_their_devices_and_log_out_everywhere_else() {
    let store = store();
    let app = app(&store);
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(logged_in(&app, "ann").await);
    }
    let bob = logged_in(&app, "bob").await;

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&send(&app, get("/devices", Some(&devices[0]))).await.body).unwrap();
    assert_eq!(listed.len(), 3);

    let other = hash(&devices[1]).to_string();
    let bobs = hash(&bob).to_string();
    let revoke_bob = send(&app, get(&format!("/revoke/{bobs}"), Some(&devices[0]))).await;
    assert_eq!(revoke_bob.body, "false", "revoked another user's session");
    let revoke = send(&app, get(&format!("/revoke/{other}"), Some(&devices[0]))).await;
    assert_eq!(revoke.body, "true");
    assert_eq!(send(&app, get("/whoami", Some(&devices[1]))).await.body, "");

    assert_eq!(
        send(&app, get("/revoke-others", Some(&devices[0])))
            .await
            .body,
        "1"
    );
    assert_eq!(send(&app, get("/whoami", Some(&devices[2]))).await.body, "");
    assert_eq!(
        send(&app, get("/whoami", Some(&devices[0]))).await.body,
        "ann"
    );
    assert_eq!(send(&app, get("/whoami", Some(&bob))).await.body, "bob");
}

// ---- 11. Forward-compatible data ----

#[tokio::test]
async fn unknown_keys_survive_and_a_wrong_type_fails_only_that_key() {
    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    let mut delta = sessionware::Delta::default();
    delta.set("from_a_newer_version", json!({"shape": [1, 2]}));
    delta.set("counter", json!("not a number"));
    assert!(store.inner.apply(&hash(&id), &delta).await.unwrap());

    let wrong = send(&app, get("/get-number/counter", Some(&id))).await;
    assert_eq!(wrong.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        send(&app, get("/get-number/missing", Some(&id))).await.body,
        "None"
    );
    assert_eq!(send(&app, get("/get/seed", Some(&id))).await.body, "\"0\"");
    send(&app, get("/set/other/1", Some(&id))).await;
    let record: Record = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert_eq!(
        record.data["from_a_newer_version"],
        json!({"shape": [1, 2]})
    );
}

#[tokio::test]
async fn the_deserialize_error_kind_names_the_problem() {
    let store = store();
    let app = Router::new()
        .route(
            "/",
            get_route(|session: Session| async move {
                session.insert("n", "text").await?;
                let err = session.get::<u64>("n").await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Deserialize);
                Ok::<_, sessionware::Error>(err.to_string())
            }),
        )
        .layer(SessionLayer::new(store));
    assert!(send(&app, get("/", None)).await.body.contains("\"n\""));
}

// ---- Extractor ----

#[tokio::test]
async fn a_missing_layer_is_a_generic_500_that_names_the_fix_in_the_log() {
    let app = routes();
    let reply = send(&app, get("/whoami", None)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "Session error.", "the client learns nothing");
    // The developer does: the rejection's Display is what gets logged.
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let rejection =
        <Session as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .expect_err("no layer, no session");
    let logged = rejection.to_string();
    assert!(logged.contains(".layer(SessionLayer::new"), "{logged}");

    let optional = Router::new().route(
        "/",
        get_route(|session: Option<Session>| async move { session.is_some().to_string() }),
    );
    assert_eq!(send(&optional, get("/", None)).await.body, "false");
    let layered = optional.layer(SessionLayer::new(MemoryStore::new()));
    assert_eq!(send(&layered, get("/", None)).await.body, "true");
}

// ---- A real server ----

#[tokio::test]
async fn a_real_server_keeps_a_session_across_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = app(&store());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    async fn fetch(addr: std::net::SocketAddr, path: &str, cookie: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test-agent/1\r\n\
             Cookie: {cookie}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
    let first = fetch(addr, "/set/k/over-tcp", "").await;
    let id = first
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: id="))
        .and_then(|rest| rest.split(';').next())
        .expect("a session cookie over TCP")
        .to_owned();
    let second = fetch(addr, "/get/k", &format!("id={id}")).await;
    assert!(second.ends_with("\"over-tcp\""), "{second}");
    let login = fetch(addr, "/login/ann", &format!("id={id}")).await;
    let id = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: id="))
        .and_then(|rest| rest.split(';').next())
        .expect("a rotated cookie")
        .to_owned();
    let devices = fetch(addr, "/devices", &format!("id={id}")).await;
    assert!(devices.starts_with("HTTP/1.1 200"), "{devices}");
    assert!(devices.contains(r#""ip":"127.0.0.1""#), "{devices}");
    assert!(
        devices.contains(r#""user_agent":"test-agent/1""#),
        "{devices}"
    );
    server.abort();
}

// ---- Events ----

#[tokio::test]
async fn a_logout_that_found_its_session_already_ended_reports_no_logout() {
    use sessionware::SessionEvent;
    use std::sync::{Arc, Mutex};

    let events: Arc<Mutex<Vec<SessionEvent>>> = Arc::default();
    let sink = events.clone();
    let store = store();
    let id = new_session(&app(&store)).await;
    let layer = SessionLayer::new(store.clone())
        .with_event_sink(move |event| sink.lock().unwrap().push(event.clone()));
    let store_behind = store.clone();
    let racing = race_router(layer, move |session: Session| async move {
        // Another request ends the session first.
        end_behind_its_back(&session, &store_behind).await?;
        session.logout().await.map(|_| "bye")
    });
    let reply = send(&racing, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.cookie("id").as_deref(),
        Some(""),
        "the cookie is still expired"
    );
    assert!(
        events.lock().unwrap().is_empty(),
        "{:?}",
        events.lock().unwrap()
    );
}

#[tokio::test]
async fn events_report_what_happened_to_sessions() {
    use sessionware::SessionEvent;
    use std::sync::{Arc, Mutex};

    let events: Arc<Mutex<Vec<SessionEvent>>> = Arc::default();
    let sink = events.clone();
    let store = store();
    let layer = SessionLayer::new(store.clone())
        .with_event_sink(move |event| sink.lock().unwrap().push(event.clone()));
    let app = app_with(layer);
    let take = || std::mem::take(&mut *events.lock().unwrap());

    let first = new_session(&app).await;
    assert_eq!(take(), [SessionEvent::Created { key: hash(&first) }]);

    let login = send(&app, get("/login/ann", Some(&first)))
        .await
        .cookie("id")
        .unwrap();
    assert_eq!(
        take(),
        [
            SessionEvent::Rotated {
                from: hash(&first),
                to: hash(&login)
            },
            SessionEvent::LoggedIn {
                key: hash(&login),
                user_id: "ann".into()
            },
        ]
    );

    send(&app, get("/get/seed", Some(&login))).await;
    assert!(take().is_empty(), "a read is not an event");

    let other = new_session(&app).await;
    send(&app, get("/login/ann", Some(&other))).await;
    take();
    send(&app, get("/revoke-others", Some(&login))).await;
    assert_eq!(
        take(),
        [SessionEvent::Revoked {
            user_id: "ann".into(),
            count: 1
        }]
    );

    send(&app, get("/logout", Some(&login))).await;
    assert_eq!(take(), [SessionEvent::LoggedOut { key: hash(&login) }]);

    let mut again = get("/get/seed", Some(&login));
    let client: std::net::SocketAddr = "192.0.2.7:50000".parse().unwrap();
    again.extensions_mut().insert(client);
    send(&app, again).await;
    assert_eq!(
        take(),
        [SessionEvent::UnknownId {
            key: hash(&login),
            ip: Some(client.ip())
        }],
        "the ID of an ended session, presented again"
    );
    send(&app, get("/untouched", Some(&login))).await;
    send(&app, get("/get/seed", Some("not-an-id"))).await;
    assert!(take().is_empty(), "untouched, or malformed: no event");

    store.set_fault(Fault::Unavailable);
    send(&app, get("/set/k/v", None)).await;
    assert_eq!(
        take(),
        [SessionEvent::StoreError {
            kind: ErrorKind::StoreUnavailable
        }]
    );
}

// ---- The cause of a store failure goes to the log, not to the client ----

#[tokio::test]
async fn a_store_failure_is_logged_with_its_cause_but_answered_generically() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Collects everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The test's runtime is single-threaded: the whole request runs under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = store();
    let app = app(&store);
    let id = new_session(&app).await;
    store.set_fault(Fault::Unavailable);
    let reply = send(&app, get("/get/seed", Some(&id))).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.body.contains("10.9.8.7"),
        "the cause reached the client"
    );
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("connection refused by 10.9.8.7:6379"),
        "cause not logged: {log}"
    );
    assert!(log.contains("ERROR"), "not logged as an error: {log}");
}

// ---- A request reads its own changes ----

#[tokio::test]
async fn a_request_reads_its_own_changes_before_they_are_saved() {
    let store = store();
    let steps = Router::new()
        .route(
            "/steps",
            get_route(|session: Session| async move {
                session.insert("a", 1).await?;
                assert_eq!(session.get::<u64>("a").await?, Some(1), "insert then get");
                assert_eq!(
                    session.remove::<u64>("a").await?,
                    Some(1),
                    "remove returns it"
                );
                assert_eq!(session.get::<u64>("a").await?, None, "removed");
                session.insert("b", 2).await?;
                session.clear().await?;
                assert_eq!(session.get::<u64>("b").await?, None, "cleared");
                assert_eq!(
                    session.get::<String>("seed").await?,
                    None,
                    "cleared stored key"
                );
                session.insert("c", 3).await?;
                assert_eq!(session.get::<u64>("c").await?, Some(3), "set after clear");
                Ok::<_, sessionware::Error>("done")
            }),
        )
        .layer(SessionLayer::new(store.clone()));
    // On an existing session (changes over a stored record) and on a new one.
    let id = new_session(&app(&store)).await;
    for cookie in [Some(id.as_str()), None] {
        let reply = send(&steps, get("/steps", cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let saved_id = reply.cookie("id").unwrap_or_else(|| id.clone());
        let record = store.inner.load(&hash(&saved_id)).await.unwrap().unwrap();
        assert_eq!(record.data.len(), 1, "{:?}", record.data);
        assert_eq!(record.data["c"], 3);
    }
}

// ---- One user's choices do not pass to the next ----

#[tokio::test]
async fn logging_in_as_another_user_does_not_inherit_remember_me() {
    let store = store();
    let app = app(&store);
    let ann = logged_in(&app, "ann").await;
    send(&app, get("/remember", Some(&ann))).await;
    assert!(
        store
            .inner
            .load(&hash(&ann))
            .await
            .unwrap()
            .unwrap()
            .remember_me
    );
    // Ann walks away from a shared computer without logging out; Bob logs in without
    // asking to be remembered.
    let reply = send(&app, get("/login/bob", Some(&ann))).await;
    let cookie = reply.set_cookie("id").expect("a new ID at login");
    assert!(
        !cookie.contains("Max-Age"),
        "Bob got Ann's persistent cookie: {cookie}"
    );
    let bob = reply.cookie("id").unwrap();
    let record = store.inner.load(&hash(&bob)).await.unwrap().unwrap();
    assert!(!record.remember_me, "Bob got Ann's 30-day session");
    assert!(record.expires_at() - OffsetDateTime::now_utc() <= Duration::minutes(31));
}

#[tokio::test]
async fn remember_me_asked_for_before_another_users_login_is_kept() {
    let store = store();
    let app = app(&store);
    let ann = logged_in(&app, "ann").await;
    send(&app, get("/remember", Some(&ann))).await;
    // Bob ticks "remember me": the handler says so before logging him in.
    let login = race_router(
        SessionLayer::new(store.clone()),
        |session: Session| async move {
            session.set_remember_me(true).await?;
            session.login("bob").await.map(|_| "logged in")
        },
    );
    let reply = send(&login, get("/race", Some(&ann))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let cookie = reply.set_cookie("id").expect("a new ID at login");
    assert!(cookie.contains("Max-Age"), "{cookie}");
    let bob = reply.cookie("id").unwrap();
    let record = store.inner.load(&hash(&bob)).await.unwrap().unwrap();
    assert!(record.remember_me && record.user_id.as_deref() == Some("bob"));
}

// ---- A session outliving its response ----

/// What a handler does with its session before handing it to a task that outlives it.
#[derive(Debug, Clone, Copy)]
enum BeforeHandingOver {
    Nothing,
    /// Reads it: unchanged, so the layer skips the write-back.
    Read,
    /// Changes it: the layer writes it back.
    Write,
}

/// A router whose handler uses its session as `before` says, then hands it to a task that
/// outlives the response. The task waits for `go`, then tries a change and sends back
/// whether it succeeded.
fn outliving_router(
    store: &Store,
    before: BeforeHandingOver,
    go: std::sync::Arc<tokio::sync::Notify>,
    results: tokio::sync::mpsc::UnboundedSender<Result<(), ErrorKind>>,
) -> Router {
    race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            match before {
                BeforeHandingOver::Nothing => {}
                BeforeHandingOver::Read => drop(session.get::<String>("seed").await?),
                BeforeHandingOver::Write => session.insert("seed", "rewritten").await?,
            }
            tokio::spawn(async move {
                go.notified().await;
                let result = session.insert("late", "write").await;
                results.send(result.map_err(|err| err.kind())).unwrap();
            });
            Ok::<_, sessionware::Error>("answered")
        },
    )
}

#[tokio::test]
async fn a_change_after_the_response_is_an_error_not_a_silent_loss() {
    for before in [
        BeforeHandingOver::Read,
        BeforeHandingOver::Nothing,
        BeforeHandingOver::Write,
    ] {
        let store = store();
        let id = new_session(&app(&store)).await;
        let go = std::sync::Arc::new(tokio::sync::Notify::new());
        let (results, mut result) = tokio::sync::mpsc::unbounded_channel();
        let app = outliving_router(&store, before, go.clone(), results);
        let reply = send(&app, get("/race", Some(&id))).await;
        assert_eq!(reply.status, StatusCode::OK);
        go.notify_one();
        let late = result.recv().await.unwrap();
        let record = store.inner.load(&hash(&id)).await.unwrap().unwrap();
        assert!(record.data.get("late").is_none(), "nothing writes it back");
        assert_eq!(
            late,
            Err(ErrorKind::ResponseSent),
            "a change made after the response reported success but was never saved \
             (the handler's use of it first: {before:?})"
        );
    }
}

#[tokio::test]
async fn a_session_logged_in_during_the_request_lists_itself_among_the_users_devices() {
    let store = store();
    let app = app(&store);
    let other = new_session(&app).await;
    send(&app, get("/login/ann", Some(&other))).await;
    let login_and_list = race_router(
        SessionLayer::new(store.clone()),
        |session: Session| async move {
            session.login("ann").await?;
            let this = session.info().await?.unwrap().key;
            let listed = session.user_sessions().await?;
            let found = listed.iter().filter(|info| info.key == this).count();
            Ok::<_, sessionware::Error>(format!("{} {found}", listed.len()))
        },
    );
    // Over an anonymous session, and in a brand-new one.
    let anonymous = new_session(&app).await;
    for (cookie, devices) in [(Some(anonymous.as_str()), 2), (None, 3)] {
        let reply = send(&login_and_list, get("/race", cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            reply.body,
            format!("{devices} 1"),
            "the listing must hold every device, this one once"
        );
    }
}

#[tokio::test]
async fn a_change_after_the_request_was_dropped_is_an_error_not_a_silent_loss() {
    let store = store();
    let id = new_session(&app(&store)).await;
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let (results, mut result) = tokio::sync::mpsc::unbounded_channel();
    let task_go = go.clone();
    // The handler hands its session to a task, then never answers: the client gives up.
    let app = race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            session.get::<String>("seed").await?;
            tokio::spawn(async move {
                task_go.notified().await;
                let result = session.insert("late", "write").await;
                results.send(result.map_err(|err| err.kind())).unwrap();
            });
            std::future::pending::<Result<&'static str, sessionware::Error>>().await
        },
    );
    let request = tower::ServiceExt::oneshot(app.clone(), get("/race", Some(&id)));
    let gave_up = tokio::time::timeout(StdDuration::from_millis(100), request).await;
    assert!(gave_up.is_err(), "the handler never answers");
    go.notify_one();
    assert_eq!(
        result.recv().await.unwrap(),
        Err(ErrorKind::ResponseSent),
        "nothing will save a change made once the request is gone"
    );
    let record = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert!(record.data.get("late").is_none());
}

// ---- Ending the session from its own device list or its settings ----

#[tokio::test]
async fn revoking_this_very_session_logs_it_out() {
    let store = store();
    let app = app(&store);
    let id = logged_in(&app, "ann").await;
    let key = hash(&id).to_string();
    let reply = send(&app, get(&format!("/revoke/{key}"), Some(&id))).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "true")
    );
    assert_cookie_removed(&reply);
    assert!(store.inner.load(&hash(&id)).await.unwrap().is_none());
    assert_eq!(store.inner.count_user("ann").await.unwrap(), 0);
}

#[tokio::test]
async fn switching_remember_me_off_on_a_session_older_than_the_standard_lifetime_ends_it() {
    let store = store();
    let now = OffsetDateTime::now_utc();
    // A remember-me session of ann's, two days old, with weeks left.
    let mut record = Record::new(
        now - Duration::days(2),
        now + Duration::days(20),
        now + Duration::days(28),
    );
    record.remember_me = true;
    record.user_id = Some("ann".into());
    record.data.insert("seed".into(), json!("kept?"));
    let id = Id::random().unwrap();
    assert!(store.inner.create(&id.hash(), &record).await.unwrap());
    let id = id.expose_secret();
    let app = race_router(
        SessionLayer::new(store.clone()),
        |session: Session| async move {
            session.set_remember_me(false).await?;
            session.insert("flash", "settings saved").await?;
            let user = session.user_id().await?.unwrap_or_default();
            Ok::<_, sessionware::Error>(format!("user={user}"))
        },
    );
    let reply = send(&app, get("/race", Some(&id))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "user=", "the handler sees the session ended");
    assert!(
        store.inner.load(&hash(&id)).await.unwrap().is_none(),
        "a standard session cannot be two days old: the record is gone"
    );
    assert_eq!(store.inner.count_user("ann").await.unwrap(), 0);
    // What the handler wrote afterwards is in a fresh session, as after a logout.
    let fresh = reply.cookie("id").expect("a new session for the flash");
    assert_ne!(fresh, id);
    let fresh = store.inner.load(&hash(&fresh)).await.unwrap().unwrap();
    assert_eq!(fresh.data.get("flash"), Some(&json!("settings saved")));
    assert!(fresh.user_id.is_none() && fresh.data.get("seed").is_none());
}

#[tokio::test]
async fn a_value_too_deep_to_store_is_refused_by_insert_and_the_request_goes_on() {
    let store = store();
    let mut too_deep = json!(1);
    for _ in 0..=sessionware::store::MAX_VALUE_DEPTH {
        too_deep = json!([too_deep]);
    }
    let app = race_router(
        SessionLayer::new(store.clone()),
        move |session: Session| async move {
            let refused = session.insert("deep", too_deep).await.map_err(|e| e.kind());
            session.insert("fine", 1).await?;
            Ok::<_, sessionware::Error>(format!("{refused:?}"))
        },
    );
    let reply = send(&app, get("/race", None)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "Err(Serialize)"),
        "the handler hears of it at insert, and its other changes are saved"
    );
    let id = reply.cookie("id").expect("the session was saved");
    let record = store.inner.load(&hash(&id)).await.unwrap().unwrap();
    assert_eq!(record.data.get("fine"), Some(&json!(1)));
    assert!(record.data.get("deep").is_none());
}
