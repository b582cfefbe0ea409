"""`gradual serve --workers N`: one trainer process and N-1 reader processes on one port.

The trainer is the service as one process runs it: it owns every model (its writer, its log,
its snapshots) and binds the listening socket. It also answers on a private Unix socket in the
data dir, where the readers reach it. Each reader accepts on the same inherited socket, holds
the served version of each model (loaded read-only from the registry and the weight store),
answers predictions itself and forwards every other request to the trainer byte for byte, so
writes keep their semantics by construction. The trainer streams its served versions to the
readers, which swap a model within milliseconds of a promotion, rollback or improvement.
"""
