"""Alembic migrations of the registry schema (a package, so it ships inside the wheel)."""
