"""A typed Python client for Gradual, sync (`GradualClient`) and async (`AsyncGradualClient`).

Lists are sent as JSON; NumPy arrays and pandas objects as a safetensors body. Stream batches
carry ids, so retries after a 429 (honouring `Retry-After`) or a lost connection never apply a
batch twice. Errors from the service raise `GradualClientError(status, code, message, field)`.
"""

from service.client.aio import AsyncGradualClient
from service.client.errors import GradualClientError, GradualConnectionError
from service.client.results import (
    Event,
    FitResult,
    Model,
    Prediction,
    Queued,
    StreamReport,
    Version,
)
from service.client.retry import RetryPolicy
from service.client.sync import GradualClient

__all__ = [
    "AsyncGradualClient",
    "Event",
    "FitResult",
    "GradualClient",
    "GradualClientError",
    "GradualConnectionError",
    "Model",
    "Prediction",
    "Queued",
    "RetryPolicy",
    "StreamReport",
    "Version",
]
