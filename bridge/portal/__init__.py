"""The patron PIN pages: My Account sign-in, Modify PIN, Forgot your PIN? and the reset link.

`server.start` serves the Starlette app (`web.create_app`) inside the daemon's event loop; every
PIN check goes through the core's Authenticator like any protocol front end. See docs/portal.md.
"""
