"""Conversions to ad platforms: integrations, consent, conversions and their delivery."""
