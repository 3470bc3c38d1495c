"""Transactional outbox: tasks are enqueued only when their transaction commits."""
