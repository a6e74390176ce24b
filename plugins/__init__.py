"""Store plugins shipped with Patron Bridge, each found through `patron_bridge.stores`."""
