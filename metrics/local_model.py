"""A metric's torch model loaded once, on first use, from a local path only; ``status`` says why not.

No weights are ever downloaded: without a readable folder the metric's value is ``None`` and its status
column says why, since a random network's number is not the metric."""
from __future__ import annotations

import abc
from typing import Any, Callable

from metrics.base import METRIC_OK


class LocalModel(abc.ABC):
    """``localize`` turns a configured path (s3:// prefix or local) into a local folder (the edit stage passes
    the storage's model sync); subclasses name the loader and the status when no path is given."""

    missing = "unavailable: no model path given"

    def __init__(self, path: str | None, device: str = "cpu",
                 localize: Callable[[str], str] | None = None) -> None:
        self.path, self.device, self.localize = path, device, localize
        self._model: Any = None
        self._status: str | None = None

    @abc.abstractmethod
    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        """(load(path, device) -> model, the exception that means "unavailable") of the subclass's model."""

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = self._load()
        return self._status

    @property
    def available(self) -> bool:
        return self.status == METRIC_OK

    def _load(self) -> str:
        if not self.path:
            return self.missing
        try:
            local = self.localize(self.path) if self.localize else self.path
        except Exception as exc:  # noqa: BLE001 - a missing model is a status, not a failed edit
            return f"unavailable: cannot fetch {self.path}: {type(exc).__name__}: {exc}"
        load, unavailable = self._loader()
        try:
            self._model = load(local, self.device)
        except unavailable as exc:
            return str(exc)
        return METRIC_OK
