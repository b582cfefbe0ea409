"""The model registry's storage: typed ORM rows, the engine, migrations and the repository."""
