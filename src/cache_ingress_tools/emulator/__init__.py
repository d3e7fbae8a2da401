"""The embedded AWS: moto plus the cache-security-group emulation."""
