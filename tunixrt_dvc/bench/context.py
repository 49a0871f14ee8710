"""What every bench row gets: the sizes to run at and a scratch directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchContext:
    sizes: tuple[int, ...]  # problem sizes (traces, examples, ...) as the row understands them
    workdir: Path  # scratch space for generated inputs, reused across rows and sizes
    params_file: Path = Path("params.yaml")  # the checkout's params, which the rows start from
