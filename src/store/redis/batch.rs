//! Auto-pipelining on a single server: the commands that concurrent requests issue in the
//! same turn of the scheduler reach Redis together, as one pipeline.
//!
//! The first command queued spawns a flush task, which yields once (so every other task
//! that is ready to run gets to queue its command first), then sends everything queued as
//! one pipeline and hands each caller its own reply. Under load a batch carries many
//! requests' commands, so the application server and Redis make one write and one read
//! for all of them instead of one each: most of a round trip's CPU on both sides is those
//! system calls. An idle server sends batches of one, at the cost of one task spawn and one
//! yield. Batches are independent: several can be in flight on the multiplexed connection.
//!
//! Each caller gets exactly the reply to its own command, server errors included (a
//! pipeline that ignores errors answers each command on its own); a connection failure
//! fails every command of the batch. A caller that gave up before its batch left (a
//! request timed out or was dropped) is not sent.

use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

/// A command waiting for its batch, with where its reply goes.
struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// A connection manager whose commands are batched as described in the module docs.
#[derive(Clone)]
pub(super) struct Batched {
    manager: ConnectionManager,
    queue: Arc<Mutex<Vec<Queued>>>,
}

impl Batched {
    pub(super) fn new(manager: ConnectionManager) -> Self {
        Self {
            manager,
            queue: Arc::default(),
        }
    }

    /// The connection itself, for calls that must not wait for a batch.
    pub(super) fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    /// Sends `cmd` with the next batch and returns its reply; a server error reply is an
    /// `Err`, as from [`Cmd::query_async`].
    pub(super) async fn send(&self, cmd: Cmd) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(Queued { cmd, reply });
            queue.len() == 1
        };
        if first {
            tokio::spawn(flush(self.manager.clone(), Arc::clone(&self.queue)));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the Redis batch was dropped before it was answered",
            )))
        })
    }
}

/// Sends what is queued once every ready task had its turn to add to it.
async fn flush(mut manager: ConnectionManager, queue: Arc<Mutex<Vec<Queued>>>) {
    tokio::task::yield_now().await;
    let mut batch = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
    batch.retain(|queued| !queued.reply.is_closed());
    if batch.len() <= 1 {
        if let Some(Queued { cmd, reply }) = batch.pop() {
            let result = manager.req_packed_command(&cmd).await;
            let _ = reply.send(result.and_then(Value::extract_error));
        }
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Queued { cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push(reply);
    }
    match pipe.query_async::<Vec<Value>>(&mut manager).await {
        Ok(values) if values.len() == replies.len() => {
            for (value, reply) in values.into_iter().zip(replies) {
                let _ = reply.send(value.extract_error());
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(RedisError::from((
                    ErrorKind::Parse,
                    "pipeline answered with the wrong number of replies",
                ))));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
