"""The `sip2` store plugin: an ILS connector over SIP2 (see plugin.py)."""

from plugins.sip2.plugin import PLUGIN

__all__ = ["PLUGIN"]
