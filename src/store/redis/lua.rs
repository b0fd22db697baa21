//! The Lua scripts: each runs atomically on the node that holds its session key.
//!
//! Every script starts with [`PRELUDE`], which reads the common arguments:
//! `ARGV[1]` the current time in milliseconds (the application server's clock, the one that
//! set the deadlines), `ARGV[2]` `'1'` when the script also keeps the indexes (a single
//! server, where every key is reachable from one script; on a cluster the client keeps them),
//! `ARGV[3]` the key prefix. Script-specific arguments follow from `ARGV[4]`.
//!
//! On a single server the scripts also write the index keys, whose names they build from the
//! prefix and the stored user ID: they cannot be declared in `KEYS` because the client does
//! not know the stored user. Standalone Redis allows this; on a cluster, where it would
//! cross slots, `ARGV[2]` is `'0'` and each script touches only the keys it declares.
//!
//! Times are whole milliseconds, well inside the 2^53 a Lua number holds exactly.

/// Shared definitions: the session liveness check and the index helpers.
const PRELUDE: &str = r#"
local now = tonumber(ARGV[1])
local keeps_index = ARGV[2] == '1'
local prefix = ARGV[3]
local all_key = prefix .. ':all'

-- HSETs the field/value pairs ARGV[from..], a bounded number per call (Lua's stack limits
-- how many values one unpack may spread).
local function hset_pairs(key, from)
  for first = from, #ARGV, 200 do
    redis.call('HSET', key, unpack(ARGV, first, math.min(first + 199, #ARGV)))
  end
end

local function user_key(user) return prefix .. ':u:{' .. user .. '}' end
local function int(n) return string.format('%d', n) end

-- The expiry (ms), user and absolute deadline (ms) of the live session hash under key; nil
-- when the key is absent, holds another type, lacks a time field, or has expired. Corrupt
-- is absent.
local function live(key)
  if redis.call('TYPE', key)['ok'] ~= 'hash' then return nil end
  local m = redis.call('HMGET', key, 'c', 'l', 'i', 'a', 'u')
  local c, l, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
  if not (c and l and i and a) then return nil end
  local expires = math.min(i, a)
  if expires <= now then return nil end
  local user = m[5]
  if not user then user = nil end
  return expires, user, a
end

-- Drops an index's expired members and sets its TTL to its latest member's expiry, so an
-- index never outlives the sessions it lists.
local function settle(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, int(math.max(1, tonumber(last[2]) - now)))
  end
end

local function index_add(key, member, expires, flag)
  if flag then
    redis.call('ZADD', key, flag, int(expires), member)
  else
    redis.call('ZADD', key, int(expires), member)
  end
  settle(key)
end

local function index_remove(key, member)
  redis.call('ZREM', key, member)
  settle(key)
end

-- Applies the delta encoded from ARGV[b] to the live session under key. Returns nil, having
-- written nothing, when there is none; else the expiry, user and absolute deadline, each
-- before and after.
-- Layout: clear ('1'/'0'), user op ('' keep, 's' set, 'c' clear), user, idle deadline ('' for
-- none), absolute deadline, remember-me, last seen ('' for none), created ('' for none),
-- the number of removed fields, those fields, then field/value pairs to set.
local function apply_delta(key, b)
  local expires, user, absolute = live(key)
  if not expires then return nil end
  if ARGV[b] == '1' then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'd:' then redis.call('HDEL', key, field) end
    end
  end
  local new_user = user
  if ARGV[b + 1] == 's' then
    new_user = ARGV[b + 2]
    redis.call('HSET', key, 'u', new_user)
  elseif ARGV[b + 1] == 'c' then
    new_user = nil
    redis.call('HDEL', key, 'u')
  end
  local new_expires, new_absolute = expires, absolute
  if ARGV[b + 3] ~= '' then
    redis.call('HSET', key, 'i', ARGV[b + 3], 'a', ARGV[b + 4], 'r', ARGV[b + 5])
    new_absolute = tonumber(ARGV[b + 4])
    new_expires = math.min(tonumber(ARGV[b + 3]), new_absolute)
  end
  if ARGV[b + 6] ~= '' then redis.call('HSET', key, 'l', ARGV[b + 6]) end
  if ARGV[b + 7] ~= '' then redis.call('HSET', key, 'c', ARGV[b + 7]) end
  local removals = tonumber(ARGV[b + 8])
  for n = b + 9, b + 8 + removals do redis.call('HDEL', key, ARGV[n]) end
  hset_pairs(key, b + 9 + removals)
  if new_expires ~= expires then
    if new_expires > now then
      redis.call('PEXPIRE', key, int(new_expires - now))
    else
      redis.call('DEL', key)
    end
  end
  return expires, user, new_expires, new_user, absolute, new_absolute
end
"#;

/// `KEYS[1]` the session. `ARGV[4]` its member name in the indexes, `ARGV[5]` its expiry,
/// `ARGV[6]` `'1'` if it has a user, `ARGV[7]` the user, then field/value pairs.
/// Returns 1 if filed, 0 if a live session already has the key.
const CREATE: &str = r#"
local key, member = KEYS[1], ARGV[4]
if live(key) then return 0 end
redis.call('DEL', key) -- an expired or foreign value under this key
local expires = tonumber(ARGV[5])
if expires <= now then return 1 end
hset_pairs(key, 8)
redis.call('PEXPIRE', key, int(expires - now))
if keeps_index then
  index_add(all_key, member, expires)
  if ARGV[6] == '1' then index_add(user_key(ARGV[7]), member, expires) end
end
return 1
"#;

/// `KEYS[1]` the session, `ARGV[4]` its member name, the delta from `ARGV[5]`. Returns
/// `{applied, expires before, expires after, user before, user after, absolute deadline
/// before, absolute deadline after}`.
const APPLY: &str = r#"
local member = ARGV[4]
local expires, user, new_expires, new_user, absolute, new_absolute = apply_delta(KEYS[1], 5)
if not expires then return {0, 0, 0, false, false, 0, 0} end
if keeps_index then
  local alive = new_expires > now
  if new_expires ~= expires then
    if alive then index_add(all_key, member, new_expires) else index_remove(all_key, member) end
  end
  if user and user ~= new_user then index_remove(user_key(user), member) end
  if new_user and (new_user ~= user or new_expires ~= expires) then
    if alive then
      index_add(user_key(new_user), member, new_expires)
    else
      index_remove(user_key(new_user), member)
    end
  end
end
return {1, expires, new_expires, user or false, new_user or false, absolute, new_absolute}
"#;

/// Single server only. `KEYS[1]` the old session key, `KEYS[2]` the new one, `KEYS[3]` the
/// old key's tombstone; `ARGV[4]` and `ARGV[5]` the old and new member names, `ARGV[6]` the
/// tombstone's lifetime (ms), the delta from `ARGV[7]`. Applies the delta, renames the hash,
/// leaves the tombstone and moves both index entries, in one step. Returns 1 if moved, 0 if
/// the old key has no live session.
const ROTATE: &str = r#"
local old, new = ARGV[4], ARGV[5]
if live(KEYS[2]) then return redis.error_reply('ERR new session key already taken') end
local expires, user, new_expires, new_user = apply_delta(KEYS[1], 7)
if not expires then return 0 end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
redis.call('DEL', KEYS[2]) -- an expired or foreign value under the new key
local alive = new_expires > now
if alive then redis.call('RENAME', KEYS[1], KEYS[2]) end
index_remove(all_key, old)
if alive then index_add(all_key, new, new_expires) end
if user then index_remove(user_key(user), old) end
if new_user and alive then index_add(user_key(new_user), new, new_expires) end
return 1
"#;

/// Cluster rotation, first step. `KEYS[1]` the old session key, `KEYS[2]` its tombstone
/// (the same hash tag, so the same slot), `ARGV[4]` the tombstone's lifetime (ms). Returns
/// the session's fields, deletes it and leaves the tombstone, in one step, if it is live;
/// otherwise an empty array. Requests racing with the rotation on the old key then find
/// nothing: they fail closed.
const TAKE: &str = r#"
if not live(KEYS[1]) then return {} end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return fields
"#;

/// `KEYS[1]` the session, `ARGV[4]` its member name, `ARGV[5]` `'1'` to delete it only if
/// `ARGV[6]` is its user. Returns `{deleted a live session, its user}`.
const DELETE: &str = r#"
local member = ARGV[4]
local expires, user = live(KEYS[1])
if ARGV[5] == '1' and (not expires or user ~= ARGV[6]) then return {0, false} end
if redis.call('DEL', KEYS[1]) == 0 or not expires then return {0, false} end
if keeps_index then
  index_remove(all_key, member)
  if user then index_remove(user_key(user), member) end
end
return {1, user or false}
"#;

/// Cluster index upkeep, on one index key. `KEYS[1]` the index, `ARGV[4]` the member,
/// `ARGV[5]` `'add'` or `'remove'`, `ARGV[6]` the expiry, `ARGV[7]` a `ZADD` flag (`XX`,
/// `GT`) or `''`.
const INDEX: &str = r#"
local key, member = KEYS[1], ARGV[4]
if ARGV[5] == 'add' then
  if tonumber(ARGV[6]) > now then
    local flag = nil
    if ARGV[7] ~= '' then flag = ARGV[7] end
    index_add(key, member, tonumber(ARGV[6]), flag)
  else
    settle(key)
  end
else
  index_remove(key, member)
end
return 1
"#;

/// The compiled scripts (their SHA1s, for `EVALSHA`).
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: redis::Script,
    pub(super) apply: redis::Script,
    pub(super) rotate: redis::Script,
    pub(super) take: redis::Script,
    pub(super) delete: redis::Script,
    pub(super) index: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            create: script(CREATE),
            apply: script(APPLY),
            rotate: script(ROTATE),
            take: script(TAKE),
            delete: script(DELETE),
            index: script(INDEX),
        }
    }

    pub(super) fn all(&self) -> [&redis::Script; 6] {
        [
            &self.create,
            &self.apply,
            &self.rotate,
            &self.take,
            &self.delete,
            &self.index,
        ]
    }
}
