"""Crash collection: throttle rules and crash ids (spec/crashes.md)."""
