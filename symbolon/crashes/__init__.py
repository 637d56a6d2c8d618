"""Crash collection: throttle rules and crash ids (docs/crashes.md, docs/throttling.md)."""
