"""Accounting systems: one connector module per system."""
