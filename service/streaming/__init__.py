"""Scale-out over Redis: per-model streams of batches, owner leases, outcomes and changes.

With `GRADUAL_REDIS_URL` set, every change to a model is an entry of its Redis stream (which
replaces the local write-ahead log); the one replica holding the model's lease applies the
entries in stream order, and the database's per-model generation fences everything it commits.
"""
