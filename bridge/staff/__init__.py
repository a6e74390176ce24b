"""The staff desk: web pages where library staff look up a card, reset its PIN after an ID
check, clear a lock, block or unblock it, and see its recent authentication decisions.

It runs on its own listener (`[staff] listen`, kept on the staff network) and reuses the patron
pages' web pieces (sessions and CSRF, i18n, security headers, mail). See docs/staff.md.
"""
