"""What every HTTP ILS connector shares: settings, the client, OAuth2 tokens, the record cache.

The connectors themselves (`plugins.koha_rest`, ...) hold only what their ILS's API says: which
call checks a PIN, which fields mean expired, blocked or fines. Everything about talking HTTP
well (one pooled keep-alive client, a deadline per operation, the circuit breaker shared with
the SIP2 connector, tokens renewed once on a 401, failures turned into `StoreUnavailable`)
lives here once.
"""
