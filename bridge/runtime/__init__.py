"""Runtime plumbing that is not the daemon's logic: the worker supervisor and shared sockets."""
