-- Patron Bridge guessing limits on Redis: one script, every decision atomic on the server.
-- The same rules as bridge/core/throttle.py's in-memory Throttle (docs/throttle-api.md).
--
-- KEYS: 1 card hash, 2 card reservations (zset id->expires), 3 source hash,
--       4 source reservations, 5 global failures (zset id->time), 6 global reservations,
--       7 settle marker (settle only)
-- ARGV: 1 op ("reserve"|"settle"|"fail"|"bad_input"|"clear"|"peek"), 2 now, 3 ticket id,
--       4 expires | result ("success"|"failure"|"release"), then the rules:
--       5 card_free_failures 6 card_delay_base 7 card_delay_max 8 card_lock_after
--       9 card_lock_seconds 10 card_forget_after 11 source_max_failures 12 source_window
--       13 source_block_seconds 14 global_max_failures 15 global_window 16 reservation_ttl
-- A counter hash: f failures, lf last failure, bu blocked until (FOREVER: until cleared),
-- lk locked (1/0). Times are the bridges' clocks (keep hosts on NTP).
local FOREVER = 1e300
local op, now, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local free, base, dmax = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lock_after, lock_s, forget = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local smax, swin, sblock = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local gmax, gwin, rttl = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])

local function keep(key, untl)
  -- garbage collection only (decisions use the stored times): expire a while after `untl`
  if untl >= FOREVER then redis.call('PERSIST', key) else
    redis.call('PEXPIRE', key, math.max(1000, math.floor((untl - now + 60) * 1000))) end
end

local function load(key, rkey, quiet)
  -- the counter as the rules see it now: forgotten when its delay is over and it was quiet
  redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now)
  local v = redis.call('HMGET', key, 'f', 'lf', 'bu', 'lk')
  local c = {f = tonumber(v[1]) or 0, lf = tonumber(v[2]) or 0, bu = tonumber(v[3]) or 0,
             lk = v[4] == '1', inflight = redis.call('ZCARD', rkey), exists = v[1] ~= false}
  if c.exists and c.bu <= now and now - c.lf > quiet then
    redis.call('DEL', key)
    c.f, c.lf, c.bu, c.lk, c.exists = 0, 0, 0, false, false
  end
  return c
end

local function save(key, c)
  redis.call('HSET', key, 'f', c.f, 'lf', c.lf, 'bu', c.bu, 'lk', c.lk and '1' or '0')
  keep(key, math.max(c.bu, c.lf + math.max(forget, swin)))
end

local function drain()
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - gwin)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
end

local function fail_card(c)
  c.f = c.f + 1
  c.lf = now
  local locked_now = 0
  if c.f >= lock_after then
    if (not c.lk) or c.bu <= now then locked_now = 1 end
    c.lk = true
    if lock_s > 0 then c.bu = now + lock_s else c.bu = FOREVER end
  elseif c.f > free then
    c.bu = now + math.min(base * 2 ^ (c.f - free - 1), dmax)
  end
  save(KEYS[1], c)
  return locked_now
end

local function fail_source(s)
  s.f = s.f + 1
  s.lf = now
  if s.f >= smax then
    s.bu = now + sblock
    s.f = 0
  end
  save(KEYS[3], s)
end

local function fail_global(member)
  redis.call('ZADD', KEYS[5], now, member)
  redis.call('PEXPIRE', KEYS[5], math.floor((gwin + 60) * 1000))
end

-- Refusals: {scope, kind, retry}; kind is "locked", "wait", "busy", "blocked", "refused".
local function card_refusal(c)
  if c.bu > now then
    if c.lk then
      if c.bu >= FOREVER then return {'card', 'locked', '-1'} end
      return {'card', 'locked', tostring(c.bu - now)}
    end
    return {'card', 'wait', tostring(c.bu - now)}
  end
  if c.inflight > 0 then
    local committed = c.f + c.inflight
    if committed >= lock_after or committed >= free then
      return {'card', 'busy', tostring(math.max(base, 1))}
    end
  end
  return nil
end

local function source_refusal(s)
  if s.bu > now then return {'source', 'blocked', tostring(s.bu - now)} end
  if s.inflight > 0 and s.f + s.inflight >= smax then return {'source', 'busy', '1'} end
  drain()
  local gf, gi = redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6])
  if gf + gi >= gmax and (s.exists or s.inflight > 0) then
    -- failed recently: refused while the failures alone reach the threshold, busy while
    -- checks in flight make up the rest; an address with a check in flight: busy
    local recent = s.exists and s.lf > now - gwin
    if recent and gf >= gmax then
      local oldest = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
      return {'global', 'refused', tostring(tonumber(oldest[2]) + gwin - now)}
    end
    if recent or s.inflight > 0 then return {'global', 'busy', '1'} end
  end
  return nil
end

if op == 'reserve' then
  local c = load(KEYS[1], KEYS[2], forget)
  local r = card_refusal(c)
  if r then return r end
  local s = load(KEYS[3], KEYS[4], swin)
  r = source_refusal(s)
  if r then return r end
  local expires = tonumber(ARGV[4])
  for _, k in ipairs({KEYS[2], KEYS[4], KEYS[6]}) do
    redis.call('ZADD', k, expires, id)
    redis.call('PEXPIRE', k, math.floor((rttl + 60) * 1000))
  end
  return {'ok'}
elseif op == 'settle' then
  -- once per ticket, whatever the retries: the marker outlives any reservation
  if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', math.floor((rttl + 600) * 1000)) then
    return {'done', '0'}
  end
  for _, k in ipairs({KEYS[2], KEYS[4], KEYS[6]}) do redis.call('ZREM', k, id) end
  local result = ARGV[4]
  if result == 'failure' then
    local c = load(KEYS[1], KEYS[2], forget)
    local locked_now = fail_card(c)
    fail_source(load(KEYS[3], KEYS[4], swin))
    drain()
    fail_global(id)
    return {'done', tostring(locked_now)}
  elseif result == 'success' then
    redis.call('DEL', KEYS[1])
  end
  return {'done', '0'}
elseif op == 'fail' then
  -- a failure nobody reserved (a service secret): card if given, source, global
  local locked_now = 0
  if KEYS[1] ~= '' and ARGV[4] == 'card' then locked_now = fail_card(load(KEYS[1], KEYS[2], forget)) end
  fail_source(load(KEYS[3], KEYS[4], swin))
  drain()
  fail_global(id)
  return {'done', tostring(locked_now)}
elseif op == 'bad_input' then
  fail_source(load(KEYS[3], KEYS[4], swin))
  return {'done', '0'}
elseif op == 'clear' then
  local existed = redis.call('EXISTS', KEYS[1])
  redis.call('DEL', KEYS[1])
  return {'done', tostring(existed)}
elseif op == 'peek' then
  -- {failures, locked-and-running (1/0), retry}: the CLI's view of one card
  local c = load(KEYS[1], KEYS[2], forget)
  local locked = (c.lk and c.bu > now) and 1 or 0
  return {tostring(c.f), tostring(locked), tostring(c.bu - now)}
end
return redis.error_reply('unknown op')
