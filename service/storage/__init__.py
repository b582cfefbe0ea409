"""What lasts: the registry (SQL), the weight store, the write-ahead log, the schema."""
