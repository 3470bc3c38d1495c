"""Drivers and builders the tests share (no fixtures: those are in conftest.py)."""
