"""Socket.IO namespaces (and later SSE): the live doors of the hub."""
