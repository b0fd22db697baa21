//! The Lua scripts: each runs atomically on the node that holds its session key.
//!
//! Every script gets the same first arguments: `ARGV[1]` the current time in milliseconds
//! (the application server's clock, the one that set the deadlines; [`HEAD`] reads it),
//! `ARGV[2]` `'1'` when the script also keeps the indexes (a single server, where every key
//! is reachable from one script; on a cluster the client keeps them), `ARGV[3]` the key
//! prefix (read by [`INDEXES`]). Script-specific arguments follow from `ARGV[4]`.
//!
//! On a single server the scripts also write the index keys, whose names they build from the
//! prefix and the stored user ID: they cannot be declared in `KEYS` because the client does
//! not know the stored user. Standalone Redis allows this; on a cluster, where it would
//! cross slots, `ARGV[2]` is `'0'` and each script touches only the keys it declares.
//!
//! Times are whole milliseconds, well inside the 2^53 a Lua number holds exactly; Redis
//! passes a number to a command as `%.17g`, which writes such a number as a plain integer.
//!
//! Cost: a script's Redis CPU is mostly its `redis.call`s (each converts its arguments and
//! reply, beyond the command's own work), then the Lua it runs. So each script is built
//! from only the pieces it uses, and the common paths make as few calls as they can: a
//! write-back reads the session with one `HMGET` (no `TYPE`: another type makes that
//! `HMGET` fail, which `redis.pcall` turns into a value), writes its fields with one
//! `HSET`, and moves an index's TTL only when its latest score may have changed. Measured
//! by `benches/redis_scripts.rs`; figures in BENCHMARKS.md.

/// Every script: the common arguments.
const HEAD: &str = r#"
local now = tonumber(ARGV[1])
"#;

/// The session liveness check.
const LIVE: &str = r#"
-- The expiry (ms), user and absolute deadline (ms) of the live session hash under key,
-- then the parts of its m field as stored (created, last seen, idle and absolute
-- deadlines, remember-me: see codec.rs); nil when the key is absent, holds another type,
-- lacks a well-formed m, or has expired. Corrupt is absent.
local function live(key)
  local m = redis.pcall('HMGET', key, 'm', 'u')
  if m.err or not m[1] then return nil end -- another type (HMGET refused it), or no m
  local c, l, si, sa, r = string.match(m[1], '^(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+):([01])$')
  if not c then return nil end
  local i, a = tonumber(si), tonumber(sa)
  local expires = a
  if i < a then expires = i end
  if expires <= now then return nil end
  return expires, m[2] or nil, a, c, l, si, sa, r
end
"#;

/// Commands over a run of arguments.
const SPREAD: &str = r#"
-- Runs command on key with list[from..to], a bounded number of values per call (Lua's
-- stack limits how many values one unpack may spread; 200 is even, so pairs stay whole).
local function spread(command, key, list, from, to)
  for first = from, to, 200 do
    redis.call(command, key, unpack(list, first, math.min(first + 199, to)))
  end
end
"#;

/// The index helpers (single server: `ARGV[2]` is `'1'`; and the cluster's `INDEX`).
///
/// An index's TTL is always its latest member's expiry, so it never outlives the sessions it
/// lists. When a score can only have risen (a new member, or a later expiry), the latest
/// score can only have risen too, so one `PTTL` read says whether the TTL must move (it need
/// not when another member expires later, or in the same millisecond): only a write that
/// lowers or removes a score reads the latest member.
/// Dropping expired members changes neither the live members nor the latest score (when
/// that one has expired, so has the index), so on `P:all`, the index of every session, it
/// runs on a sixteenth of the writes only (when the member's first hex digit is `0`: members
/// are hashes, so that is spread evenly): `count` skips expired members anyway, and the few
/// left between trims take bounded space. User indexes, small, are trimmed on every write.
const INDEXES: &str = r#"
local prefix = ARGV[3]
local all_key = prefix .. ':all'

local function user_key(user) return prefix .. ':u:{' .. user .. '}' end

local function trim(key, member)
  if key ~= all_key or string.byte(member, 1) == 48 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  end
end

-- Drops expired members and sets the TTL to the latest member's expiry.
local function settle(key, member)
  trim(key, member)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
  end
end

-- Files member with score expires (later than now). rising: the member's score, if it had
-- one, was lower. flag: a ZADD flag (XX, GT) or nil.
local function index_add(key, member, expires, rising, flag)
  local added
  if flag then
    added = redis.call('ZADD', key, flag, expires, member)
  else
    added = redis.call('ZADD', key, expires, member)
  end
  if added == 0 and not rising then return settle(key, member) end
  trim(key, member)
  local ttl = expires - now
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

local function index_remove(key, member)
  if redis.call('ZREM', key, member) == 1 then settle(key, member) end
end
"#;

/// The write-back shared by `APPLY` and `ROTATE` (needs [`LIVE`] and [`SPREAD`]).
const APPLY_DELTA: &str = r#"
-- Applies the delta encoded from ARGV[b] to the live session under key. Returns nil, having
-- written nothing, when there is none; else the expiry, user and absolute deadline, each
-- before and after.
-- Layout (codec.rs, push_delta): clear ('1'/'0'), user op ('' keep, 's' set, 'c' clear),
-- the new user, the parts of m that change (m's layout with each unchanged part empty; ''
-- when none does; the idle and absolute deadlines move together and give the new expiry),
-- the number of fields to delete, those fields, then the field/value pairs to set.
local function apply_delta(key, b)
  local expires, user, absolute, c, l, si, sa, r = live(key)
  if not expires then return nil end
  local new_expires, new_absolute = expires, absolute
  local times = nil -- the new m, when the delta moves a time
  if ARGV[b + 3] ~= '' then
    -- Checked before anything is written: a script error does not undo earlier writes.
    local parts = {string.match(ARGV[b + 3], '^(%-?%d*):(%-?%d*):(%-?%d*):(%-?%d*):([01]?)$')}
    if not parts[1] or (parts[3] == '') ~= (parts[4] == '') then
      error('malformed session times')
    end
    if parts[3] ~= '' then
      new_absolute = tonumber(parts[4])
      new_expires = math.min(tonumber(parts[3]), new_absolute)
    end
    local stored = {c, l, si, sa, r}
    for k = 1, 5 do
      if parts[k] == '' then parts[k] = stored[k] end
    end
    times = table.concat(parts, ':')
  end
  if ARGV[b] == '1' then
    local data = {}
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'd:' then data[#data + 1] = field end
    end
    spread('HDEL', key, data, 1, #data)
  end
  local new_user = user
  if ARGV[b + 1] == 's' then
    new_user = ARGV[b + 2]
  elseif ARGV[b + 1] == 'c' then
    new_user = nil
  end
  local sets = b + 5 + tonumber(ARGV[b + 4])
  spread('HDEL', key, ARGV, b + 5, sets - 1)
  if times then
    -- The merged m rides in the first HSET: 198 values (an even count, so pairs stay
    -- whole) plus m's pair makes the 200 a call spreads at most.
    local last = math.min(#ARGV, sets + 197)
    redis.call('HSET', key, 'm', times, unpack(ARGV, sets, last))
    sets = last + 1
  end
  spread('HSET', key, ARGV, sets, #ARGV)
  if new_expires ~= expires then
    if new_expires > now then
      redis.call('PEXPIRE', key, new_expires - now)
    else
      redis.call('DEL', key)
    end
  end
  return expires, user, new_expires, new_user, absolute, new_absolute
end
"#;

/// `KEYS[1]` the session; on a cluster rotation's second step, `KEYS[2]` its tombstone.
/// `ARGV[4]` its member name in the indexes, `ARGV[5]` its expiry, `ARGV[6]` `'1'` if it
/// has a user, `ARGV[7]` the user, then field/value pairs. Returns 1 if filed, 0 if a live
/// session already has the key, 2 if `KEYS[2]` is given and exists: a revocation ended
/// the rotating session before it reached this key (see [`REVOKE`]).
const CREATE: &str = r#"
local key, member = KEYS[1], ARGV[4]
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
-- A new key is almost always free: one cheap existence check (PTTL is -2 for no key, for
-- any type; its integer reply builds no Lua table, as TYPE's does) spares the liveness read
-- and the DEL.
if redis.call('PTTL', key) ~= -2 then
  if live(key) then return 0 end
  redis.call('DEL', key) -- an expired or foreign value under this key
end
local expires = tonumber(ARGV[5])
if expires <= now then return 1 end
spread('HSET', key, ARGV, 8, #ARGV)
redis.call('PEXPIRE', key, expires - now)
if ARGV[2] == '1' then
"#;

/// The rest of [`CREATE`], after [`INDEXES`] (defined only when the script keeps them).
const CREATE_INDEXES: &str = r#"
  index_add(all_key, member, expires, false)
  if ARGV[6] == '1' then index_add(user_key(ARGV[7]), member, expires, false) end
end
return 1
"#;

/// `KEYS[1]` the session, `ARGV[4]` its member name, the delta from `ARGV[5]`. Returns
/// on a single server 1 if applied, else 0; on a cluster, where the client keeps the
/// indexes from them, `{applied, expires before, expires after, user before, user after,
/// absolute deadline before, absolute deadline after}` (a table reply costs Redis more to
/// convert and the client more to parse, so only the cluster gets one).
const APPLY: &str = r#"
local member = ARGV[4]
local expires, user, new_expires, new_user, absolute, new_absolute = apply_delta(KEYS[1], 5)
if ARGV[2] ~= '1' then
  if not expires then return {0, 0, 0, false, false, 0, 0} end
  return {1, expires, new_expires, user or false, new_user or false, absolute, new_absolute}
end
if not expires then return 0 end
if new_expires ~= expires or new_user ~= user then
"#;

/// The rest of [`APPLY`], after [`INDEXES`]: most writes move neither the expiry nor the
/// user, and never define the index helpers.
const APPLY_INDEXES: &str = r#"
  local alive, rising = new_expires > now, new_expires > expires
  if new_expires ~= expires then
    if alive then
      index_add(all_key, member, new_expires, rising)
    else
      index_remove(all_key, member)
    end
  end
  if user and user ~= new_user then index_remove(user_key(user), member) end
  if new_user and (new_user ~= user or new_expires ~= expires) then
    if alive then
      index_add(user_key(new_user), member, new_expires, rising and new_user == user)
    else
      index_remove(user_key(new_user), member)
    end
  end
end
return 1
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
if alive then index_add(all_key, new, new_expires, false) end
if user then index_remove(user_key(user), old) end
if new_user and alive then index_add(user_key(new_user), new, new_expires, false) end
return 1
"#;

/// Cluster rotation, first step. `KEYS[1]` the old session key, `KEYS[2]` its tombstone
/// (the same hash tag, so the same slot), `ARGV[4]` the tombstone's lifetime (ms), `ARGV[5]`
/// the new key's member name. Returns the session's fields, deletes it and leaves the
/// tombstone, in one step, if it is live; otherwise an empty array. Requests racing with
/// the rotation on the old key then find nothing: they fail closed. The tombstone names
/// the new key, so that a revocation that finds the record gone can follow it ([`REVOKE`]).
const TAKE: &str = r#"
if not live(KEYS[1]) then return {} end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
return fields
"#;

/// Cluster revocation of one session of a user. `KEYS[1]` the session, `KEYS[2]` its
/// tombstone; `ARGV[4]` the user, `ARGV[5]` `'1'` when the key was reached through a
/// rotation tombstone (so the rotation may not have filed it yet), `ARGV[6]` the lifetime
/// (ms) of the mark that keeps such a rotation from filing it. Returns `{outcome, new
/// member}`: `{1, nil}` if it deleted the user's live session; `{2, new member}` if the
/// session was rotated away to that key, which the caller must revoke in turn; `{3, nil}`
/// if it marked a key a rotation has yet to file (the [`CREATE`] of its second step then
/// refuses it); `{0, nil}` otherwise (another user's session, or none).
const REVOKE: &str = r#"
local expires, owner = live(KEYS[1])
if expires then
  if owner ~= ARGV[4] then return {0, false} end
  redis.call('DEL', KEYS[1])
  return {1, false}
end
local stone = redis.pcall('GET', KEYS[2])
if type(stone) == 'string' and string.len(stone) == 64 then return {2, stone} end
if ARGV[5] == '1' and not stone then
  -- 'revoked' is REVOCATION_MARK in mod.rs: rotated_at does not count it as a rotation.
  redis.call('SET', KEYS[2], 'revoked', 'PX', ARGV[6])
  return {3, false}
end
return {0, false}
"#;

/// `KEYS[1]` a rotation tombstone. Returns `{its value, its remaining lifetime (ms)}`, or
/// an empty array if there is none (or the key holds another type), in one round trip.
const ROTATED: &str = r#"
local stone = redis.pcall('GET', KEYS[1])
if type(stone) ~= 'string' then return {} end
return {stone, redis.call('PTTL', KEYS[1])}
"#;

/// `KEYS[1]` the session, `ARGV[4]` its member name, `ARGV[5]` `'1'` to delete it only if
/// `ARGV[6]` is its user. Returns `{deleted a live session, its user}`.
const DELETE: &str = r#"
local member = ARGV[4]
local expires, user = live(KEYS[1])
if ARGV[5] == '1' and (not expires or user ~= ARGV[6]) then return {0, false} end
if redis.call('DEL', KEYS[1]) == 0 or not expires then return {0, false} end
if ARGV[2] == '1' then
  index_remove(all_key, member)
  if user then index_remove(user_key(user), member) end
end
return {1, user or false}
"#;

/// Single server only. `KEYS[1]` the user's index, `ARGV[4]` the user, `ARGV[5]` the member
/// to keep (`''` for none). Deletes every live session of the user the index lists, and
/// its index entries, in one step: read first and deleted after, a session could be
/// rotated to a key the reading never saw, and outlive its user's revocation. Returns how
/// many it deleted.
const DELETE_USER: &str = r#"
local user, keep = ARGV[4], ARGV[5]
local deleted = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  if member ~= keep then
    local key = prefix .. ':s:{' .. member .. '}'
    local expires, owner = live(key)
    if expires and owner == user then
      redis.call('DEL', key)
      index_remove(all_key, member)
      index_remove(KEYS[1], member)
      deleted = deleted + 1
    end
  end
end
return deleted
"#;

/// Cluster index upkeep, on one index key. `KEYS[1]` the index, `ARGV[4]` the member,
/// `ARGV[5]` `'add'` or `'remove'`, `ARGV[6]` the expiry, `ARGV[7]` a `ZADD` flag (`XX`,
/// `GT`) or `''`. With `GT` a score only ever rises; with `XX` it may fall.
const INDEX: &str = r#"
local key, member = KEYS[1], ARGV[4]
if ARGV[5] == 'add' then
  local expires = tonumber(ARGV[6])
  if expires > now then
    local flag = nil
    if ARGV[7] ~= '' then flag = ARGV[7] end
    index_add(key, member, expires, flag == 'GT', flag)
  else
    settle(key, member)
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
    pub(super) revoke: redis::Script,
    pub(super) rotated: redis::Script,
    pub(super) delete: redis::Script,
    pub(super) delete_user: redis::Script,
    pub(super) index: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        // Each script defines only the functions it calls, and the index helpers only in
        // the branch that uses them: Lua creates every `local function` (a closure) each
        // time its definition runs.
        let script = |pieces: &[&str]| redis::Script::new(&[&[HEAD], pieces].concat().concat());
        Self {
            create: script(&[LIVE, SPREAD, CREATE, INDEXES, CREATE_INDEXES]),
            apply: script(&[LIVE, SPREAD, APPLY_DELTA, APPLY, INDEXES, APPLY_INDEXES]),
            rotate: script(&[LIVE, SPREAD, INDEXES, APPLY_DELTA, ROTATE]),
            take: script(&[LIVE, TAKE]),
            revoke: script(&[LIVE, REVOKE]),
            rotated: script(&[ROTATED]),
            delete: script(&[LIVE, INDEXES, DELETE]),
            delete_user: script(&[LIVE, INDEXES, DELETE_USER]),
            index: script(&[INDEXES, INDEX]),
        }
    }

    pub(super) fn all(&self) -> [&redis::Script; 9] {
        [
            &self.create,
            &self.apply,
            &self.rotate,
            &self.take,
            &self.revoke,
            &self.rotated,
            &self.delete,
            &self.delete_user,
            &self.index,
        ]
    }
}
