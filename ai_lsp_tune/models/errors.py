"""The one error a model that cannot be found or loaded raises."""

from __future__ import annotations

from typing import Literal

ModelErrorKind = Literal["model_not_found", "bad_model"]


class ModelError(Exception):
    """A model that cannot be found or loaded, with a kind and one sentence for the user."""

    def __init__(self, kind: ModelErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ModelErrorKind = kind
        self.message = message
