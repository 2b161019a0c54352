"""What the real-editor tests need, and what a missing piece means.

On a developer's fresh machine a missing editor is a skip that says how to install it; in CI
(`.ci/run` sets ``AI_LSP_EDITOR_TESTS=require``) it is a failure, never a skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

INSTALL = "`source editors/ci-setup.sh` installs it (as .ci/run does)"


def missing(what: str) -> NoReturn:
    """Skip (or, when editors are required, fail) a test whose editor tooling is not installed."""
    message = f"{what}: {INSTALL}"
    if os.environ.get("AI_LSP_EDITOR_TESTS") == "require":
        pytest.fail(message)
    pytest.skip(message)
