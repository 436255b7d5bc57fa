"""One progress bar for every stage: tqdm when enabled (and on a terminal), a silent stand-in otherwise."""

from __future__ import annotations

from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_description(self, s: str) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, enabled: bool, *, desc: str | None = None, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar (``update``, ``set_description``, ``set_postfix_str``, ``close``) or a silent one."""
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=None)
