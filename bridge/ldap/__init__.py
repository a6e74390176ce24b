"""ldap front end."""
