"""Helpers of the reliability, load and security tests: the launcher's extra
Cassandra nodes, apps served by real WSGI servers in their own process,
concurrent HTTP clients, /proc socket inspection and test certificates."""
