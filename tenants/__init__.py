"""Trailmark's domain core: tables, services and tenant isolation. Imports neither Litestar nor Celery."""
