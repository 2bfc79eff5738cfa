"""Shared foundations: errors, identity and the wire envelope."""
