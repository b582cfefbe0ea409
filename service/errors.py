"""The domain's error tree. It knows nothing of HTTP: `service.api.errors` maps it to responses."""

from __future__ import annotations


class GradualError(Exception):
    """Root of every error a client can cause or observe; `code` is stable, `field` optional."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthorized(GradualError):
    """No bearer token, or one the service does not know."""

    code = "unauthorized"


class Forbidden(GradualError):
    """A known token whose scope does not cover the route."""

    code = "forbidden"

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class UntrustedHost(GradualError):
    """The Host header is not in GRADUAL_TRUSTED_HOSTS (DNS rebinding)."""

    code = "untrusted_host"


class CrossOrigin(GradualError):
    """A browser request from a page of another origin tried to change something (CSRF)."""

    code = "cross_origin"


class NotFound(GradualError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r}", field="name")


class VersionNotFound(NotFound):
    code = "version_not_found"

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name!r} has no version {version}", field="version")


class Conflict(GradualError):
    code = "conflict"


class ModelExists(Conflict):
    code = "model_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"a model named {name!r} exists already", field="name")


class InvalidInput(GradualError):
    """A request's content is well-formed but unacceptable (shape, range, type)."""

    code = "invalid_input"


class MalformedBody(GradualError):
    code = "malformed_body"


class BatchRejected(InvalidInput):
    """A training step would have left the model non-finite or absurd; nothing was applied."""

    code = "batch_rejected"


class BatchSkipped(GradualError):
    """A stream stopped at an earlier failure (on_error=stop): this batch was not applied."""

    code = "batch_skipped"


class VersionUnavailable(GradualError):
    """A version row exists but its weights were archived or fail their checksum."""

    code = "version_unavailable"


class ModelUnavailable(GradualError):
    """The model exists but did not load at start (see /readyz): retry once it is repaired."""

    code = "model_unavailable"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} did not load at start: {reason}", field="name")


class ReplayFailed(ModelUnavailable):
    """Replaying a model's log met an unexpected error: the model is not loaded."""


class BodyTooLarge(GradualError):
    code = "body_too_large"


class UnsupportedMediaType(GradualError):
    code = "unsupported_media_type"


class QueueFull(GradualError):
    """The model's bounded queue of pending batches is full: retry after `retry_after` s."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(GradualError):
    """The service cannot take this now (a dependency is down, ownership is moving): retry."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeLate(Unavailable):
    """The entry is durable in the model's stream and will apply; its outcome did not arrive
    in time."""

    code = "outcome_late"


class Fenced(Unavailable):
    """This replica's ownership of a model lapsed: another replica's generation is newer, so
    nothing it computed since may be committed."""

    code = "not_owner"


class HistoryDiverged(RuntimeError):
    """A version's number, chosen by its model's one writer, is not the registry's next: a
    second writer, or a bug. The write fails; the log still holds what it would have recorded."""


class StorageFull(GradualError):
    """A directory the change must be written to is full (or under the configured reserve);
    `field` names it (log, weights, database). Refused before logging, nothing was applied;
    failing a later write of a logged batch, the batch counts as applied (the message says
    which: a resend with its batch_id is then a duplicate)."""

    code = "storage_full"

    def __init__(self, message: str, *, resource: str, retry_after: float) -> None:
        super().__init__(message, field=resource)
        self.retry_after = retry_after


class VersionNotWritten(StorageFull):
    """Replay: this record's version failed to write when the record first ran (a later
    version holds its batches), so the replay fails at the same point the first run did."""

    def __init__(self, seq: int) -> None:
        super().__init__(
            f"record {seq}'s version was not written when it first ran", resource="weights",
            retry_after=0.0,
        )  # fmt: skip


class StorageUnavailable(Unavailable):
    """A directory the change must be written to is read-only or gone (as `StorageFull`)."""

    code = "storage_unavailable"

    def __init__(self, message: str, *, resource: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.field = resource
