"""Checkpoints: written atomically, validated on load, pruned to the last few plus the best.

``RUN/checkpoints/step-00000500/`` holds ``weights.safetensors`` (every module, the EMA copies as
``ema.G.*``), ``state.pt`` (optimizers, every RNG, counters, sampler state; tensors and plain data only,
loaded with ``weights_only=True``) and ``meta.json``. ``last.json`` and ``best.json`` point at the
checkpoint to resume from and the one ``sample`` uses by default.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CxrganError
from ..utils.io import atomic_directory, write_json_atomic

FORMAT = "cxrgan-checkpoint"


def ckpt_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(run: Path, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write one checkpoint directory atomically and point ``last.json`` at it."""
    from safetensors.torch import save_file

    root = run / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / ckpt_name(step)
    with atomic_directory(final, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "weights.safetensors"))
        torch.save(state, tmp / "state.pt")
        write_json_atomic(tmp / "meta.json", {"format": FORMAT, "step": step, **meta})
    write_json_atomic(root / "last.json", {"step": step, "path": final.name})
    return final


def mark_best(run: Path, step: int, figure: float, why: dict[str, Any] | None = None) -> None:
    """Point ``best.json`` at checkpoint ``step`` with its FD and why it was chosen."""
    write_json_atomic(run / "checkpoints" / "best.json", {"step": step, "path": ckpt_name(step), "fd": figure, **(why or {})})


def rewind(run: Path, step: int) -> None:
    """Make checkpoint ``step`` the last one again: later checkpoints (an abandoned trajectory) are removed."""
    for s in list_checkpoints(run):
        if s > step:
            shutil.rmtree(run / "checkpoints" / ckpt_name(s), ignore_errors=True)
    write_json_atomic(run / "checkpoints" / "last.json", {"step": step, "path": ckpt_name(step)})


def prune(run: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints, never the best one."""
    root = run / "checkpoints"
    best = _pointer(root / "best.json")
    steps = sorted(list_checkpoints(run))
    for s in steps[:-keep] if keep > 0 else []:
        if s != best:
            shutil.rmtree(root / ckpt_name(s), ignore_errors=True)


def list_checkpoints(run: Path) -> list[int]:
    """Steps of the complete checkpoints in ``run`` (a directory with ``meta.json``)."""
    root = Path(run) / "checkpoints"
    out = []
    for d in root.glob("step-*") if root.is_dir() else []:
        if (d / "meta.json").is_file():
            try:
                out.append(int(d.name.split("-")[1]))
            except ValueError:
                continue
    return sorted(out)


def best_step(run: Path) -> int | None:
    """The step ``best.json`` of ``run`` points at, or ``None`` (no checkpoint was eligible, or no run)."""
    return _pointer(Path(run) / "checkpoints" / "best.json")


def _pointer(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve(run: Path, which: str | int = "last") -> Path:
    """The checkpoint directory for ``which``: ``last``, ``best`` (falls back to last) or a step number."""
    run = Path(run)
    steps = list_checkpoints(run)
    if not steps:
        raise CxrganError(f"run {run} has no checkpoint; train it first (cxrgan train ... --out {run})")
    if isinstance(which, int) or str(which).isdigit():
        step = int(which)
        if step not in steps:
            raise CxrganError(f"run {run} has no checkpoint at step {step}; available: {', '.join(map(str, steps))}")
    elif which in ("last", "best"):
        step = _pointer(run / "checkpoints" / f"{which}.json")
        if step not in steps:
            step = steps[-1]
    else:
        raise CxrganError(f"--checkpoint {which!r}: use last, best or a step number")
    return run / "checkpoints" / ckpt_name(step)


def load_checkpoint(path: Path, family: str, with_state: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """``(tensors, state, meta)`` of a checkpoint; :class:`CxrganError` when it is damaged or foreign."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CxrganError(f"checkpoint {path}: meta.json missing or unreadable ({exc}); delete the directory and use an earlier checkpoint") from None
    if meta.get("format") != FORMAT:
        raise CxrganError(f"{path} is not a cxrgan checkpoint (format {meta.get('format')!r})")
    if meta.get("family") != family:
        raise CxrganError(f"checkpoint {path} is for model {meta.get('family')!r}, not {family!r}")
    try:
        tensors = load_file(str(path / "weights.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True) if with_state else None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        others = [s for s in list_checkpoints(path.parent.parent) if ckpt_name(s) != path.name]
        hint = f"; other checkpoints: {', '.join(map(str, others))} (delete {path} to resume from the newest)" if others else ""
        raise CxrganError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}){hint}") from None
    return tensors, state, meta


def module_tensors(modules: dict[str, torch.nn.Module], prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten module state dicts into one ``{prefix+name.key: tensor}`` dict for safetensors."""
    return {f"{prefix}{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def load_modules(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    for name, m in modules.items():
        sd = {k[len(prefix) + len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}{name}.")}
        try:
            m.load_state_dict(sd)
        except RuntimeError as exc:
            raise CxrganError(f"checkpoint weights do not fit module {name} (was the config changed?): {str(exc).splitlines()[0]}") from None
