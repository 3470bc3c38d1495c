"""Purchases: recording sales and refunds (REST and Stripe), Stripe webhooks."""
