"""A person's rights over their data and the tenant's retention policy: export, erase, expire."""
