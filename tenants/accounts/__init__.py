"""Tenants, tenant users and API keys."""
