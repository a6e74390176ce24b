"""The SIP2 connector's circuit breaker is the one every ILS connector shares: `plugins.breaker`.

Kept as a name so existing imports (`plugins.sip2.breaker.Breaker`) keep working; there is one
implementation.
"""

from plugins.breaker import Breaker, State

__all__ = ["Breaker", "State"]
