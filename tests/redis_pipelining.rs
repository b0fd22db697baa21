//! Auto-pipelining on a single Redis server: commands that concurrent requests issue
//! together reach Redis in shared round trips, and each caller still gets exactly its own
//! reply, errors included.
//!
//! Runs on a private `redis-server`, whose `INFO stats` then counts only this test's reads.

#[path = "support/redis.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use sessionware::{Id, IdHash, Record, RedisStore, SessionStore};
use time::{Duration, OffsetDateTime};
use tokio::task::JoinSet;

const CONCURRENT: usize = 64;

/// How many times Redis read commands from its clients' sockets so far.
async fn socket_reads(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info = support::info(conn, "stats").await;
    info.lines()
        .find_map(|line| line.strip_prefix("total_reads_processed:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats reports total_reads_processed")
}

fn record(n: usize) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + Duration::hours(1), now + Duration::hours(12));
    record
        .data
        .insert("n".into(), serde_json::Value::from(n as u64));
    record
}

async fn private_store(tag: &str) -> (support::OwnServer, RedisStore) {
    let server = support::OwnServer::start_volatile(tag);
    match RedisStore::connect(&server.url()).await {
        Ok(store) => (server, store),
        Err(err) => panic!("cannot reach the private redis-server: {err}"),
    }
}

/// Loads every key at once, one task each, and returns each key's `n` in key order.
async fn load_all(store: &RedisStore, keys: &[IdHash]) -> Vec<Option<u64>> {
    let mut tasks = JoinSet::new();
    for (position, key) in keys.iter().enumerate() {
        let (store, key) = (store.clone(), *key);
        tasks.spawn(async move {
            let record = store.load(&key).await.expect("load");
            (
                position,
                record.map(|record| record.data["n"].as_u64().unwrap()),
            )
        });
    }
    let mut found = vec![None; keys.len()];
    while let Some(joined) = tasks.join_next().await {
        let (position, n) = joined.expect("load task");
        found[position] = n;
    }
    found
}

async fn create_all(store: &RedisStore) -> Vec<IdHash> {
    create_many(store, CONCURRENT).await
}

async fn create_many(store: &RedisStore, count: usize) -> Vec<IdHash> {
    let keys: Vec<IdHash> = (0..count).map(|_| Id::random().unwrap().hash()).collect();
    for (n, key) in keys.iter().enumerate() {
        assert!(store.create(key, &record(n)).await.expect("create"));
    }
    keys
}

// One worker thread, as a server runs that is pinned to one core. Its scheduler runs a task
// woken by another right after it: without auto-pipelining, the connection's writer then
// sends each command as soon as it is queued, one write per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn concurrent_loads_share_round_trips_and_get_their_own_records() {
    let (server, store) = private_store("pipelining").await;
    let mut conn = support::raw(&server.url()).await;
    let keys = create_all(&store).await;

    let before = socket_reads(&mut conn).await;
    let found = load_all(&store, &keys).await;
    let reads = socket_reads(&mut conn).await - before - 1; // minus the INFO itself

    let want: Vec<Option<u64>> = (0..CONCURRENT as u64).map(Some).collect();
    assert_eq!(found, want, "every caller gets the record it asked for");
    assert!(
        reads <= (CONCURRENT / 8) as u64,
        "{CONCURRENT} concurrent loads took {reads} socket reads on the server: \
         they were not pipelined together"
    );
}

#[tokio::test]
async fn a_failing_command_fails_only_its_own_caller() {
    let (server, store) = private_store("pipelining-errors").await;
    let mut conn = support::raw(&server.url()).await;
    let keys = create_all(&store).await;
    // Another Redis type under one session's key: its HGETALL fails with WRONGTYPE inside
    // the same batch as everyone else's, and that load alone reads as no session.
    let spoiled = 7;
    let _: () = redis::cmd("SET")
        .arg(format!("sessionware:s:{{{}}}", keys[spoiled]))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();

    let found = load_all(&store, &keys).await;
    for (n, value) in found.iter().enumerate() {
        let want = (n != spoiled).then_some(n as u64);
        assert_eq!(*value, want, "session {n}");
    }
}

#[tokio::test]
async fn callers_that_give_up_leave_the_others_answered() {
    let (_server, store) = private_store("pipelining-cancel").await;
    let keys = create_all(&store).await;
    let mut tasks = JoinSet::new();
    let mut abandoned = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        let (store, key) = (store.clone(), *key);
        let handle = tasks.spawn(async move {
            let record = store.load(&key).await.expect("load");
            (
                position,
                record.map(|record| record.data["n"].as_u64().unwrap()),
            )
        });
        if position % 2 == 1 {
            abandoned.push(handle);
        }
    }
    // Half the callers are dropped while their commands wait in the queue.
    tokio::task::yield_now().await;
    for handle in abandoned {
        handle.abort();
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((position, n)) => {
                assert_eq!(n, Some(position as u64), "session {position}");
                answered += 1;
            }
            Err(err) => assert!(err.is_cancelled(), "a load task failed: {err}"),
        }
    }
    assert!(answered >= CONCURRENT / 2, "only {answered} loads answered");
    // The connection is still in step: the next load gets its own reply.
    assert_eq!(load_all(&store, &keys[..1]).await, vec![Some(0)]);
}

// Thousands of callers at once, more than one pipeline carries (1024): however they are
// split into batches, each gets its own record and none is left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_burst_of_thousands_of_callers_is_answered_in_full() {
    let (_server, store) = private_store("pipelining-burst").await;
    let keys = create_many(&store, 2500).await;
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), load_all(&store, &keys))
        .await
        .expect("every load of the burst is answered");
    let want: Vec<Option<u64>> = (0..keys.len() as u64).map(Some).collect();
    assert_eq!(found, want);
}

/// Polls every future in one task: all their commands are queued before the flush runs.
async fn in_one_task<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

// One task queues more commands than a pipeline carries (1024) before the flush runs: the
// rest must leave in batches of their own, not wait for a caller that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn more_commands_than_one_pipeline_are_all_answered() {
    let (_server, store) = private_store("pipelining-cap").await;
    let keys = create_many(&store, 2500).await;
    let loads = keys.iter().map(|key| store.load(key)).collect();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), in_one_task(loads))
        .await
        .expect("every command is answered");
    for (n, record) in found.into_iter().enumerate() {
        let record = record.expect("load").expect("a live session");
        assert_eq!(record.data["n"], n as u64);
    }
}

/// Runs `future` on this thread without any Tokio runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn a_call_from_outside_any_runtime_is_an_error_not_a_panic() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_server, store, keys) = runtime.block_on(async {
        let (server, store) = private_store("pipelining-no-runtime").await;
        let keys = create_many(&store, 2).await;
        (server, store, keys)
    });
    // Another executor polls the call: there is no Tokio runtime to run a flush task on,
    // nor the timers redis-rs needs.
    let err = block_on(store.load(&keys[1])).expect_err("no runtime, no Redis call");
    assert_eq!(err.kind(), sessionware::ErrorKind::Store);
    assert!(format!("{err:?}").contains("Tokio runtime"), "{err:?}");
    // The store still works where it belongs.
    let record = runtime.block_on(store.load(&keys[1])).expect("load");
    assert_eq!(record.expect("a live session").data["n"], 1);
}

#[test]
fn a_runtime_dropped_with_a_batch_pending_does_not_wedge_the_store() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_server, store, keys) = first.block_on(async {
        let (server, store) = private_store("pipelining-runtime-drop").await;
        let keys = create_many(&store, 1).await;
        (server, store, keys)
    });
    // Queue a load, let its flush task start and yield, then drop the runtime under it.
    first.block_on(async {
        let (store, key) = (store.clone(), keys[0]);
        tokio::spawn(async move { store.load(&key).await });
        tokio::task::yield_now().await;
    });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = second.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), store.load(&keys[0])).await
    });
    // The connection itself may or may not survive its runtime; what matters is that the
    // call is answered, not left behind a flush that died with the first runtime.
    assert!(
        outcome.is_ok(),
        "the store is wedged: the call was never answered"
    );
}
