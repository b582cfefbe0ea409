"""The live models: the hub, the per-model writer, the executor of log records, serving."""
