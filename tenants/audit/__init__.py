"""The audit log: what staff changed or revealed, for the owner to read."""
