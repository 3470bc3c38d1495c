"""The integrations and conversions API."""
