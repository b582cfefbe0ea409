"""`with` blocks for the objects that hold something to release: the block's end calls
`close()`, however it ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Makes `with thing:` call `thing.close()` at the end; subclasses say what `close` does."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        raise NotImplementedError
