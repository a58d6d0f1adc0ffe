"""Alembic revisions, oldest first: 0001 definitions, 0002 runtime, 0003 security."""
