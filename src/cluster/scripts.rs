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
