"""sip2 front end."""
