"""The database: engine, typed tables, migrations run at start."""
