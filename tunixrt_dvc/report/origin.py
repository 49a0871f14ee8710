"""Where a seed sweep shown beside a run was made, against the run itself: the machine (XLA
picks other kernels on another CPU kind, so results differ), the commit and the params."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunixrt_dvc.sweep.runs import flatten

SEED = "seed"


@dataclass(frozen=True)
class SweepOrigin:
    """A sweep config's devices, commits and seeds, and how this run differs from it."""

    devices: tuple[str, ...]  # recorded ones; empty when the sweep predates the record
    commits: tuple[str, ...]
    seeds: tuple[Any, ...]
    run_device: str | None
    differing: tuple[tuple[str, Any, Any], ...]  # (param, the sweep's value, this run's)

    @property
    def same_device(self) -> bool | None:
        """Whether every run of the sweep ran on this run's device (None: not recorded)."""
        if not self.devices or self.run_device is None:
            return None
        return set(self.devices) == {self.run_device}

    def sentences(self) -> list[str]:
        seeds = ", ".join(str(s) for s in self.seeds)
        made = (
            f"Made on {' and '.join(self.devices)}"
            if self.devices
            else "Made on a device the sweep did not record"
        )
        commits = (
            f"at commit {', '.join(c[:7] for c in self.commits)}"
            if self.commits
            else "at a commit it did not record"
        )
        out = [f"{made}, {commits} (seeds {seeds})."]
        here = self.run_device or "an unrecorded device"
        if self.same_device is True:
            out.append(f"This run's device is the same kind: {here}.")
        elif self.same_device is False:
            out.append(
                f"This run ran on another kind of machine ({here}): XLA picks other kernels "
                "there, so its figures may differ from the sweep's."
            )
        else:
            out.append(f"This run ran on {here}; whether the sweep's device matches is unknown.")
        if self.differing:
            diffs = "; ".join(
                f"{k}: {json.dumps(a, default=str)} there, {json.dumps(b, default=str)} here"
                for k, a, b in self.differing
            )
            out.append(f"Its params differ from this run's: {diffs}.")
        else:
            out.append("Its params are this run's (but the seed).")
        return out


def sweep_origin(config: Mapping[str, Any], manifest: Mapping[str, Any]) -> SweepOrigin:
    """The origin of one config of a `tunixrt sweep summary --json` file against a run's
    manifest (train/fingerprint.json: its device and the params of the train stage's sections:
    only those are compared)."""
    runs = [r for r in config.get("runs", []) if isinstance(r, Mapping)]
    devices = tuple(sorted({d for r in runs if (d := r.get("device"))}))
    commits = tuple(sorted({c for r in runs if (c := r.get("commit"))}))
    swept = next((r.get("params") for r in runs if isinstance(r.get("params"), Mapping)), None)
    here = dict(flatten(manifest.get("params") or {}))
    differing = []
    if swept is not None:
        for key in sorted(here.keys() & swept.keys() - {SEED}):
            if json.dumps(swept[key], default=str) != json.dumps(here[key], default=str):
                differing.append((key, swept[key], here[key]))
    device = manifest.get("device")
    return SweepOrigin(
        devices=devices,
        commits=commits,
        seeds=tuple(r.get(SEED) for r in runs),
        run_device=device if isinstance(device, str) else None,
        differing=tuple(differing),
    )
