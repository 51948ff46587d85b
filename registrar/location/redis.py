"""``redis://HOST:PORT/DB`` — the location store shared by several processes.

Layout: one hash per AOR, key ``<prefix><aor>``; field = binding key (see
``Binding.key``), value = ``"<seq> <expires_at> <binding JSON>"``. The two leading
numbers let Lua filter expired bindings and order by recency without decoding
JSON; the JSON is produced by Python and stored verbatim, so floats round-trip
exactly (Lua's cjson would re-encode them with 14 significant digits).

Expiry is the absolute ``expires_at`` of the injected clock, filtered on read; the
hash's TTL is set to ceil(max remaining)+1 so Redis itself frees AORs whose
bindings all died. With the reactor clock, expires_at is epoch seconds, so the
processes sharing a Redis must have synchronised (NTP) clocks.

Every update is one Lua script, which Redis runs atomically: the stale-CSeq check
and the write cannot interleave with another process's update of the same AOR.
The script restates ``binding.apply_changes``; the contract tests hold the two to
the same behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from registrar.location import Clock, LocationService, deferred_errors
from registrar.location.binding import (
    WILDCARD,
    Binding,
    Change,
    LocationError,
    StaleCSeq,
    binding_from_json,
    binding_to_json,
    normalise_aor,
    sort_bindings,
)

# KEYS[1] = AOR hash; ARGV[1] = now; ARGV[2] = '1' to apply the CSeq check;
# ARGV[3] = JSON list of ops:
#   {o='put', k=key, c=contact, ci=call_id, cs=cseq, e=expires_at, v=json}
#   {o='del', k=key, ci=call_id|null, cs=cseq|null}      -- Removal
#   {o='all', ci=call_id|null, cs=cseq|null}             -- Removal('*')
#   {o='delc', c=contact}                                -- remove() by Contact URI
# Returns {number of live bindings removed, stored value of each live binding...}
# or the error 'STALE <json [contact, stored cseq, request cseq]>'.
_UPDATE_LUA = r"""
local key = KEYS[1]
local now = tonumber(ARGV[1])
local check = ARGV[2] == '1'
local ops = cjson.decode(ARGV[3])
local flat = redis.call('HGETALL', key)
local live, dead = {}, {}
local maxseq = 0
for i = 1, #flat, 2 do
  local v = flat[i + 1]
  local seq, exp = string.match(v, '^(%d+) (%S+) ')
  local s, e = tonumber(seq), tonumber(exp)
  if s > maxseq then maxseq = s end
  if e > now then
    live[flat[i]] = {seq = s, exp = e, v = v, off = #seq + #exp + 3}
  else
    dead[#dead + 1] = flat[i]
  end
end
for i = 1, #dead do redis.call('HDEL', key, dead[i]) end

-- Call-ID/contact/CSeq live in the JSON; decode only bindings a change targets.
local function rec(entry)
  if entry.rec == nil then entry.rec = cjson.decode(string.sub(entry.v, entry.off)) end
  return entry.rec
end
local function stale_check(entry, op)
  local r = rec(entry)
  if r.call_id == op.ci and r.cseq >= op.cs then
    return redis.error_reply('STALE ' .. cjson.encode({r.contact, r.cseq, op.cs}))
  end
end

if check then
  -- Against the state before this request, as binding._check_cseq does.
  for _, op in ipairs(ops) do
    if op.o ~= 'delc' and type(op.ci) == 'string' and type(op.cs) == 'number' then
      if op.o == 'all' then
        for _, entry in pairs(live) do
          local err = stale_check(entry, op)
          if err then return err end
        end
      elseif live[op.k] then
        local err = stale_check(live[op.k], op)
        if err then return err end
      end
    end
  end
end

local removed = 0
for _, op in ipairs(ops) do
  if op.o == 'put' then
    if op.e > now then
      maxseq = maxseq + 1
      local prefix = string.format('%d %s ', maxseq, op.es)
      local v = prefix .. op.v
      live[op.k] = {seq = maxseq, exp = op.e, v = v, off = #prefix + 1}
      redis.call('HSET', key, op.k, v)
    elseif live[op.k] then
      live[op.k] = nil
      removed = removed + 1
      redis.call('HDEL', key, op.k)
    end
  elseif op.o == 'del' then
    if live[op.k] then
      live[op.k] = nil
      removed = removed + 1
      redis.call('HDEL', key, op.k)
    end
  elseif op.o == 'all' then
    for f, _ in pairs(live) do
      removed = removed + 1
      redis.call('HDEL', key, f)
    end
    live = {}
  elseif op.o == 'delc' then
    for f, entry in pairs(live) do
      if rec(entry).contact == op.c then
        live[f] = nil
        removed = removed + 1
        redis.call('HDEL', key, f)
      end
    end
  end
end

local out = {removed}
local maxexp = nil
for _, entry in pairs(live) do
  out[#out + 1] = entry.v
  if maxexp == nil or entry.exp > maxexp then maxexp = entry.exp end
end
if maxexp == nil then
  redis.call('DEL', key)
else
  redis.call('EXPIRE', key, math.ceil(maxexp - now) + 1)
end
return out
"""

# KEYS = a batch of AOR hashes from SCAN; ARGV[1] = now; ARGV[2] = mode.
# 'count' -> live bindings; 'aors' -> keys with a live binding; 'purge' -> number of
# expired bindings deleted (emptied hashes are deleted).
_SWEEP_LUA = r"""
local now = tonumber(ARGV[1])
local mode = ARGV[2]
local total = 0
local names = {}
for _, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  local n = 0
  local dead = {}
  for i = 1, #flat, 2 do
    local _, exp = string.match(flat[i + 1], '^(%d+) (%S+) ')
    if tonumber(exp) > now then n = n + 1 else dead[#dead + 1] = flat[i] end
  end
  if mode == 'purge' then
    for i = 1, #dead do redis.call('HDEL', key, dead[i]) end
    total = total + #dead
    if n == 0 then redis.call('DEL', key) end
  elseif mode == 'count' then
    total = total + n
  elseif n > 0 then
    names[#names + 1] = key
  end
end
if mode == 'aors' then return names end
return total
"""

_SCAN_BATCH = 500
#: Longest wait (seconds) between reconnection attempts while Redis is down.
_RECONNECT_MAX_DELAY = 1.0


@implementer(LocationService)
class RedisLocationService:
    def __init__(
        self,
        host: str,
        port: int = 6379,
        db: int = 0,
        *,
        password: str | None = None,
        clock: Clock | None = None,
        reactor: Any = None,
        prefix: str = "sipcalling:loc:",
        poolsize: int = 4,
        timeout: float = 1.5,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.clock: Clock = clock if clock is not None else reactor
        self._reactor = reactor
        self._where = f"redis location store {host}:{port}/{db}"
        self._prefix = prefix
        self._timeout = timeout
        # Lazy: open_location() stays synchronous; commands queue until connected.
        # convertNumbers=False: replies are our strings, never to be guessed at.
        self._redis = txredisapi.lazyConnectionPool(
            host,
            port,
            dbid=db,
            poolsize=poolsize,
            password=password,
            connectTimeout=timeout,
            # On a late reply txredisapi drops the connection, which keeps replies
            # and requests paired; our own timeout below also covers the wait for
            # a connection, which this one does not.
            replyTimeout=timeout,
            convertNumbers=False,
        )
        # Reconnect soon after Redis comes back: txredisapi backs off up to 10 s by
        # default, which would keep answering 500 that long after the outage.
        factory = getattr(self._redis, "_factory", None)
        if factory is not None:
            factory.maxDelay = _RECONNECT_MAX_DELAY
        self._closed = False

    # -- LocationService -------------------------------------------------------

    @deferred_errors
    def get(self, aor: str) -> defer.Deferred[list[Binding]]:
        now = self.clock.seconds()
        d = self._call(self._redis.hgetall, self._prefix + normalise_aor(aor))
        d.addCallback(lambda fields: self._decode_live(fields.values(), now))
        return d

    @deferred_errors
    def put(self, binding: Binding) -> defer.Deferred[None]:
        d = self._update(binding.aor, [self._put_op(binding)], check=False)
        d.addCallback(lambda _: None)
        return d

    @deferred_errors
    def update(self, aor: str, changes: Sequence[Change]) -> defer.Deferred[list[Binding]]:
        aor = normalise_aor(aor)
        ops = [self._op(aor, c) for c in changes]
        now = self.clock.seconds()
        d = self._update(aor, ops, check=True)
        d.addCallback(lambda reply: self._decode_live(reply[1:], now))
        return d

    @deferred_errors
    def remove(self, aor: str, contact: str) -> defer.Deferred[bool]:
        d = self._update(normalise_aor(aor), [{"o": "delc", "c": contact}], check=False)
        d.addCallback(lambda reply: int(reply[0]) > 0)
        return d

    @deferred_errors
    def remove_all(self, aor: str) -> defer.Deferred[int]:
        d = self._update(normalise_aor(aor), [{"o": "all", "ci": None, "cs": None}], check=False)
        d.addCallback(lambda reply: int(reply[0]))
        return d

    @defer.inlineCallbacks
    def purge_expired(self) -> Any:
        total = 0
        for reply in (yield self._sweep("purge")):
            total += int(reply)
        return total

    @defer.inlineCallbacks
    def count(self) -> Any:
        total = 0
        for reply in (yield self._sweep("count")):
            total += int(reply)
        return total

    @defer.inlineCallbacks
    def aors(self) -> Any:
        names: list[str] = []
        for reply in (yield self._sweep("aors")):
            names.extend(k[len(self._prefix) :] for k in reply)
        return sorted(names)

    def close(self) -> defer.Deferred[None]:
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        d = defer.maybeDeferred(self._redis.disconnect)
        d.addCallback(lambda _: None)
        return d

    # -- internals ---------------------------------------------------------------

    def _put_op(self, b: Binding) -> dict[str, Any]:
        return {
            "o": "put",
            "k": b.key,
            "c": b.contact,
            "ci": b.call_id,
            "cs": b.cseq,
            "e": b.expires_at,
            # The exact repr goes into the stored prefix; Lua's %g would round it.
            "es": repr(b.expires_at),
            "v": binding_to_json(b),
        }

    def _op(self, aor: str, change: Change) -> dict[str, Any]:
        if isinstance(change, Binding):
            if change.aor != aor:
                raise ValueError(f"binding for {change.aor} in an update of {aor}")
            return self._put_op(change)
        if change.contact == WILDCARD:
            return {"o": "all", "ci": change.call_id, "cs": change.cseq}
        return {"o": "del", "k": change.key, "ci": change.call_id, "cs": change.cseq}

    def _update(self, aor: str, ops: list[dict[str, Any]], check: bool) -> defer.Deferred[Any]:
        now = self.clock.seconds()
        args = [repr(now), "1" if check else "0", json.dumps(ops, separators=(",", ":"))]
        d = self._call(self._redis.eval, _UPDATE_LUA, [self._prefix + aor], args)
        d.addErrback(self._stale, aor)
        return d

    def _stale(self, failure: Failure, aor: str) -> Failure:
        # The script signals a stale CSeq as a Redis error reply; _call has already
        # turned that into LocationError carrying the reply text.
        if failure.check(LocationError) and failure.value.args[0].startswith("STALE "):
            contact, stored, requested = json.loads(failure.value.args[0][6:])
            raise StaleCSeq(aor, contact, int(stored), int(requested))
        return failure

    @defer.inlineCallbacks
    def _sweep(self, mode: str) -> Any:
        """Run the sweep script over every AOR hash, SCAN batch by SCAN batch."""
        now = self.clock.seconds()
        replies = []
        cursor: Any = 0
        pattern = self._prefix + "*"
        while True:
            cursor, keys = yield self._call(
                self._redis.scan, cursor, pattern=pattern, count=_SCAN_BATCH
            )
            if keys:
                replies.append(
                    (yield self._call(self._redis.eval, _SWEEP_LUA, list(keys), [repr(now), mode]))
                )
            if str(cursor) == "0":
                return replies

    def _decode_live(self, values: Any, now: float) -> list[Binding]:
        entries = []
        for value in values:
            seq, exp, text = value.split(" ", 2)
            if float(exp) > now:
                entries.append((int(seq), binding_from_json(text)))
        return sort_bindings(entries)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if self._closed:
            return defer.fail(LocationError(f"{self._where} is closed"))
        d = defer.maybeDeferred(method, *args, **kwargs)
        # The lazy pool waits forever for a server that is down; bound that so a
        # REGISTER fails (and is answered) instead of hanging.
        d.addTimeout(self._timeout, self._reactor)
        d.addErrback(self._wrap_error)
        return d

    def _wrap_error(self, failure: Failure) -> Failure:
        if failure.check(LocationError):
            return failure
        if failure.check(defer.TimeoutError):
            raise LocationError(f"{self._where}: no reply within {self._timeout:g}s") from None
        if failure.check(txredisapi.ResponseError):
            msg = str(failure.value.args[0]) if failure.value.args else "error reply"
            if msg.startswith("STALE "):
                raise LocationError(msg) from None
            raise LocationError(f"{self._where}: {' '.join(msg.split())}") from None
        if failure.check(txredisapi.ConnectionError, ConnectionError, OSError):
            raise LocationError(f"{self._where}: {failure.getErrorMessage()}") from None
        return failure


__all__ = ["RedisLocationService"]
