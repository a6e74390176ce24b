"""`FederationState` in Redis: every worker of every host sees the same codes, tokens, consents
and sign-on sessions.

Keys are `<key_prefix>oidc:<key>` with Redis's own expiry; a tag is a set
`<key_prefix>oidc:tag:<tag>` of the keys stored with it. `redeem` is one Lua script (run
atomically by Redis): the code's value is read, replaced by `used:<token key>` keeping its
expiry, and stored under the token key; a code found already used has its token deleted.
"""

from __future__ import annotations

from typing import Any

from bridge.federation.state import Redeemed, StateUnavailable, Taken
from bridge.state.redis_client import UNAVAILABLE

USED = b"used:"

REDEEM = """
local value = redis.call('GET', KEYS[1])
if not value then return {0} end
if string.sub(value, 1, 5) == 'used:' then
  redis.call('DEL', ARGV[3] .. string.sub(value, 6))
  return {2}
end
redis.call('SET', KEYS[1], 'used:' .. ARGV[1], 'KEEPTTL')
redis.call('SET', KEYS[2], value, 'PX', ARGV[2])
return {1, value}
"""

DELETE_TAGGED = """
local keys = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(keys) do redis.call('DEL', ARGV[1] .. key) end
redis.call('DEL', KEYS[1])
return #keys
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisState:
    shared = True

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._redeem = client.register_script(REDEEM)
        self._delete_tagged = client.register_script(DELETE_TAGGED)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except UNAVAILABLE as exc:
            raise StateUnavailable(type(exc).__name__) from exc

    async def put(self, key: str, value: str, ttl: float, *, tag: str | None = None) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.prefix + key, value, px=_ms(ttl))
        if tag is not None:
            index = f"{self.prefix}tag:{tag}"
            pipe.sadd(index, key)
            pipe.pexpire(index, _ms(ttl), gt=True)
            pipe.pexpire(index, _ms(ttl), nx=True)
        await self._call(pipe.execute())

    async def get(self, key: str) -> str | None:
        value = await self._call(self.client.get(self.prefix + key))
        if value is None or value.startswith(USED):
            return None
        return str(value.decode())

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete(self.prefix + key))

    async def delete_tagged(self, tag: str) -> None:
        await self._call(self._delete_tagged(keys=[f"{self.prefix}tag:{tag}"], args=[self.prefix]))

    async def put_new(self, key: str, value: str, ttl: float) -> str:
        await self._call(self.client.set(self.prefix + key, value, px=_ms(ttl), nx=True))
        stored = await self._call(self.client.get(self.prefix + key))
        return value if stored is None else str(stored.decode())

    async def redeem(self, code: str, token: str, token_ttl: float) -> Redeemed:
        answer = await self._call(
            self._redeem(
                keys=[self.prefix + code, self.prefix + token],
                args=[token, _ms(token_ttl), self.prefix],
            )
        )
        if answer[0] == 1:
            return Redeemed(Taken.TAKEN, answer[1].decode())
        return Redeemed(Taken.REPLAYED if answer[0] == 2 else Taken.UNKNOWN)

    async def aclose(self) -> None:
        await self.client.aclose()
