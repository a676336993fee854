"""The official state_dict key lists (tests/data/keys/*.txt: key, shape, param or buffer, in the official order)
and a model's own list."""

from __future__ import annotations

from pathlib import Path

import torch

KEYS_DIR = Path(__file__).parent / "data" / "keys"

KeyRow = tuple[str, tuple[int, ...], str]


def read_keys(name: str) -> list[KeyRow]:
    """``<key> <shape> <param|buffer>`` lines of ``tests/data/keys/<name>.txt`` (comments skipped)."""
    rows = []
    for line in (KEYS_DIR / f"{name}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, kind = line.split()
            rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s), kind))
    return rows


def key_list(model: torch.nn.Module) -> list[KeyRow]:
    """The model's state_dict as (key, shape, 'param' | 'buffer') rows, in order."""
    buffers = {name for name, _ in model.named_buffers()}
    return [(k, tuple(v.shape), "buffer" if k in buffers else "param") for k, v in model.state_dict().items()]
