"""Metering: what a request may spend and what it spent (see ARCHITECTURE.md for the map)."""
