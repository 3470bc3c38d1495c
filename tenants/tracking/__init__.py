"""Tracking: sites, the collect pipeline (validate → Redis stream → ingest) and visitor history."""
