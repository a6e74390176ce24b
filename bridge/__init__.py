"""Patron Bridge: one daemon that answers SIP2, LDAP and RADIUS with library barcode/PIN checks."""

__version__ = "0.1.0"
