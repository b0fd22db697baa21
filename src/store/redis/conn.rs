//! One handle over a single server or a cluster, with script calls that survive a server
//! that has forgotten its scripts (restarted, or `SCRIPT FLUSH`ed).

use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind, Value};

use super::batch::Batched;
use super::lua::Scripts;
use crate::error::Error;

/// A connection to a single server (which reconnects by itself) or to a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(Batched),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    async fn query_once<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(conn) => Ok(redis::from_redis_value(conn.send(cmd.clone()).await?)?),
            Conn::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }

    /// Runs one command (a script call too): one round trip, plus two more only when the
    /// server no longer knows our scripts.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        scripts: &Scripts,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self.query_once(cmd).await {
            Err(err) if is_no_script(&err) => {
                self.load(scripts).await?;
                self.query_once(cmd).await
            }
            result => result,
        }
    }

    /// Runs independent commands together: one pipelined round trip on a single server,
    /// concurrent calls to the owning nodes on a cluster. A server error in one command is
    /// that command's result; a connection error fails the whole call.
    pub(super) async fn many(
        &self,
        scripts: &Scripts,
        cmds: Vec<Cmd>,
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        let mut results = self.many_once(&cmds).await?;
        let forgotten: Vec<usize> = (0..results.len())
            .filter(|&n| matches!(&results[n], Err(err) if is_no_script(err)))
            .collect();
        if !forgotten.is_empty() {
            // A script that was not known did not run, so running it now runs it once.
            self.load(scripts).await?;
            let again: Vec<Cmd> = forgotten.iter().map(|&n| cmds[n].clone()).collect();
            for (n, result) in forgotten.into_iter().zip(self.many_once(&again).await?) {
                results[n] = result;
            }
        }
        Ok(results)
    }

    async fn many_once(&self, cmds: &[Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Single(conn) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                let values: Vec<Value> = pipe.query_async(&mut conn.manager().clone()).await?;
                let results: Vec<RedisResult<Value>> = values
                    .into_iter()
                    .map(|value| match value {
                        Value::ServerError(err) => Err(err.into()),
                        value => Ok(value),
                    })
                    .collect();
                if results.len() != cmds.len() {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "pipeline answered with the wrong number of replies",
                    )));
                }
                Ok(results)
            }
            Conn::Cluster(conn) => {
                let mut tasks = tokio::task::JoinSet::new();
                for (n, cmd) in cmds.iter().enumerate() {
                    let (mut conn, cmd) = (conn.clone(), cmd.clone());
                    tasks.spawn(async move { (n, cmd.query_async::<Value>(&mut conn).await) });
                }
                let mut results: Vec<Option<RedisResult<Value>>> = vec![None; cmds.len()];
                while let Some(joined) = tasks.join_next().await {
                    let (n, result) = joined.map_err(|_| {
                        RedisError::from((ErrorKind::Client, "a cluster call's task failed"))
                    })?;
                    if let Err(err) = &result {
                        if is_unavailable(err) {
                            return Err(err.clone());
                        }
                    }
                    results[n] = Some(result);
                }
                results
                    .into_iter()
                    .map(|result| {
                        result.ok_or_else(|| {
                            RedisError::from((ErrorKind::Client, "a cluster call did not finish"))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Loads every script (on a cluster, onto every primary).
    async fn load(&self, scripts: &Scripts) -> RedisResult<()> {
        for script in scripts.all() {
            match self {
                Conn::Single(conn) => script.load_async(&mut conn.manager().clone()).await?,
                Conn::Cluster(conn) => script.load_async(&mut conn.clone()).await?,
            };
        }
        Ok(())
    }
}

fn is_no_script(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Whether an error means the server could not be reached or could not serve now, as
/// opposed to a command it refused.
fn is_unavailable(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    ) || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
}

/// Connection trouble is [`Error::unavailable`] (a 503); anything the server answered with
/// is [`Error::store`].
pub(super) fn to_error(err: RedisError) -> Error {
    if is_unavailable(&err) {
        Error::unavailable(err)
    } else {
        Error::store(err)
    }
}

/// Whether the server refused a command because the key holds another type.
pub(super) fn is_wrong_type(err: &RedisError) -> bool {
    err.code() == Some("WRONGTYPE")
}
