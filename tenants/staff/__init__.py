"""Staff: the tenant's own people who log in to the dashboard (tenant users), their sessions and roles."""
