//! The Lua scripts, one atomic step each in Redis (key names in [`super::wire`]).
//!
//! A channel's first script call creates its meta hash at a new epoch (given by the node) and
//! drops any stream left from an earlier epoch, so stream ids always grow within an epoch.

/// Publish. KEYS: meta, stream, idempotency key. ARGV: topic, JSON before the offset, JSON
/// after it, history size, history TTL (ms), a new epoch, `1` if the publisher named the
/// message (idempotent retry), meta TTL (ms). Returns `{offset, epoch}`, or `{"dup", "<offset>
/// <epoch>"}` when this message id was already published within the history TTL.
pub const PUBLISH: &str = r#"
if ARGV[7] == '1' then
  local prev = redis.call('get', KEYS[3])
  if prev then return {'dup', prev} end
end
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('del', KEYS[2])
end
local off = redis.call('hincrby', KEYS[1], 'o', 1)
redis.call('pexpire', KEYS[1], ARGV[8])
local json = ARGV[2] .. off .. ARGV[3]
if tonumber(ARGV[4]) > 0 and tonumber(ARGV[5]) > 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[4], off .. '-0', 'd', json)
  redis.call('pexpire', KEYS[2], ARGV[5])
end
redis.call('publish', ARGV[1], off .. ' ' .. epoch .. ' ' .. json)
if ARGV[7] == '1' and tonumber(ARGV[5]) > 0 then
  redis.call('set', KEYS[3], off .. ' ' .. epoch, 'PX', ARGV[5])
end
return {off, epoch}
"#;

/// Position and history. KEYS: meta, stream. ARGV: since, at most this many entries (0: none,
/// only the position), a new epoch, meta TTL (ms). Returns `{offset, epoch, first offset kept
/// (0: none), {id, json, id, json, …}}` with the entries after `since`, oldest first.
pub const RANGE: &str = r#"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('hset', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('del', KEYS[2])
end
redis.call('pexpire', KEYS[1], ARGV[4])
local off = tonumber(redis.call('hget', KEYS[1], 'o') or '0')
local first = 0
local out = {}
if tonumber(ARGV[2]) > 0 then
  local f = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1)
  if f[1] then first = tonumber(string.match(f[1][1], '^(%d+)')) end
  local from = (tonumber(ARGV[1]) + 1) .. '-0'
  local entries = redis.call('xrange', KEYS[2], from, '+', 'COUNT', ARGV[2])
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][2]
  end
end
return {off, epoch, first, out}
"#;

/// Presence entries of this node. KEYS: hash (connection id → JSON), expiry zset. ARGV: TTL
/// (ms), then connection id, JSON, … Each entry expires TTL after this call unless renewed;
/// the time is Redis's, so nodes' clocks do not matter.
pub const PRESENCE_ADD: &str = r#"
local t = redis.call('time')
local exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('zadd', KEYS[2], exp, ARGV[i])
end
redis.call('pexpire', KEYS[1], ARGV[1])
redis.call('pexpire', KEYS[2], ARGV[1])
return 1
"#;

/// Presence entries that left. KEYS: hash, expiry zset. ARGV: connection ids.
pub const PRESENCE_REMOVE: &str = r#"
for i = 1, #ARGV do
  redis.call('hdel', KEYS[1], ARGV[i])
  redis.call('zrem', KEYS[2], ARGV[i])
end
return 1
"#;

/// The live presence entries (expired ones, such as a dead node's, are dropped first).
/// KEYS: hash, expiry zset. Returns `{id, JSON, id, JSON, …}`.
pub const PRESENCE_GET: &str = r#"
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('hdel', KEYS[1], id) end
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
return redis.call('hgetall', KEYS[1])
"#;
