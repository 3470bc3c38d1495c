"""Purchases API: recording sales and refunds, the Stripe integration and its webhook endpoint."""
