//! Redis killed, restarted and frozen while requests flow through the layer: failures are
//! prompt 503s (never a panic, a hang or a silently empty session), no acknowledged write
//! is lost, and service resumes by itself when Redis is back.
//!
//! Each test runs its own `redis-server` on a free loopback port, with append-only
//! persistence fsynced on every write, so a SIGKILL loses nothing Redis acknowledged.

#[path = "support/redis.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use http::StatusCode;
use sessionware::{Id, RedisStore, SessionLayer, SessionStore};

const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long past the store timeout a failing request may take (scheduling slack).
const SLACK: Duration = Duration::from_millis(700);

struct Outcome {
    index: usize,
    write: bool,
    status: StatusCode,
    body: String,
    took: Duration,
    at: Instant,
}

/// Sends writes (`/set/kN/vN`) and reads (`/get/seed`) on one session, alternately, until
/// `until`, at most 2000 requests.
async fn traffic(app: Router, id: String, until: Instant) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for index in 0..2000 {
        if Instant::now() >= until {
            break;
        }
        let write = index % 2 == 0;
        let path = if write {
            format!("/set/k{index}/v{index}")
        } else {
            "/get/seed".to_owned()
        };
        let started = Instant::now();
        let reply = support::send(&app, &path, Some(&id)).await;
        outcomes.push(Outcome {
            index,
            write,
            status: reply.status,
            body: reply.body,
            took: started.elapsed(),
            at: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outcomes
}

async fn setup(server: &support::OwnServer) -> (RedisStore, Router, String) {
    let store = match RedisStore::connect(&server.url()).await {
        Ok(store) => store.with_prefix("faults"),
        Err(err) => panic!("cannot reach the private redis-server: {err}"),
    };
    let app = support::app(SessionLayer::new(store.clone()).with_store_timeout(STORE_TIMEOUT));
    let seeded = support::send(&app, "/set/seed/0", None).await;
    assert_eq!(seeded.status, StatusCode::OK);
    (store, app, seeded.cookie.expect("a session"))
}

/// The checks every fault scenario shares; returns the outcomes after `recovered`.
fn check(outcomes: &[Outcome], recovered: Instant) -> Vec<&Outcome> {
    for outcome in outcomes {
        assert!(
            outcome.status == StatusCode::OK || outcome.status == StatusCode::SERVICE_UNAVAILABLE,
            "request {} got {} ({})",
            outcome.index,
            outcome.status,
            outcome.body
        );
        assert!(
            outcome.took <= STORE_TIMEOUT + SLACK,
            "request {} took {:?}",
            outcome.index,
            outcome.took
        );
        if !outcome.write && outcome.status == StatusCode::OK {
            assert_eq!(
                outcome.body, "0",
                "a read during the fault saw an empty session"
            );
        }
    }
    let failed = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(
        failed > 0,
        "the fault was never noticed: is the test killing the right server?"
    );
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at > recovered).collect();
    assert!(
        after.len() >= 20,
        "too few requests after recovery: {}",
        after.len()
    );
    let tail = &after[after.len() - 20..];
    assert!(
        tail.iter().all(|o| o.status == StatusCode::OK),
        "service did not resume: {:?}",
        tail.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    println!(
        "{} requests: {} ok, {failed} answered 503; {} after recovery",
        outcomes.len(),
        outcomes.len() - failed,
        after.len()
    );
    after
}

/// Every write answered 200 is in the session.
async fn assert_no_acknowledged_write_lost(store: &RedisStore, id: &str, outcomes: &[Outcome]) {
    let key = Id::parse(id.as_bytes()).expect("an issued ID").hash();
    let record = store
        .load(&key)
        .await
        .expect("Redis is back")
        .expect("the session survived");
    let lost: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.write && o.status == StatusCode::OK)
        .filter(|o| {
            record.data.get(&format!("k{}", o.index)) != Some(&format!("v{}", o.index).into())
        })
        .map(|o| o.index)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_redis_loses_no_acknowledged_write() {
    let mut server = support::OwnServer::start("kill");
    let (store, app, id) = setup(&server).await;
    let until = Instant::now() + Duration::from_secs(6);
    let flow = tokio::spawn(traffic(app, id.clone(), until));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart");
    let recovered = Instant::now() + Duration::from_millis(1500);

    let outcomes = flow.await.expect("the traffic task");
    check(&outcomes, recovered);
    assert_no_acknowledged_write_lost(&store, &id, &outcomes).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_gives_prompt_503s_then_service_resumes() {
    let server = support::OwnServer::start("freeze");
    let (store, app, id) = setup(&server).await;
    let until = Instant::now() + Duration::from_secs(7);
    let flow = tokio::spawn(traffic(app, id.clone(), until));

    tokio::time::sleep(Duration::from_millis(800)).await;
    server.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.signal("-CONT");
    let recovered = Instant::now() + Duration::from_millis(2500);

    let outcomes = flow.await.expect("the traffic task");
    check(&outcomes, recovered);
    assert_no_acknowledged_write_lost(&store, &id, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_from_the_start_answers_503_until_redis_comes_up() {
    let mut server = support::OwnServer::start("late");
    let (store, _, _) = setup(&server).await;
    server.kill();
    let app = support::app(SessionLayer::new(store.clone()).with_store_timeout(STORE_TIMEOUT));
    let store = Arc::new(store);
    let started = Instant::now();
    let reply = support::send(&app, "/set/a/1", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.cookie.is_none(),
        "a cookie for a session that was never stored"
    );
    assert!(started.elapsed() <= STORE_TIMEOUT + SLACK);
    let err = store.count().await.unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err}");

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = support::send(&app, "/set/a/1", None).await;
        if reply.status == StatusCode::OK {
            assert!(reply.cookie.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "service never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
}
