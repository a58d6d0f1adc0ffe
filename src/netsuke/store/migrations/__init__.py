"""Alembic environment and revisions of the store's schema (run through ``netsuke.store``)."""
