"""Charts as inline SVG: DVC's own Vega-Lite templates, filled by DVC's renderer, drawn offline.

The same templates `dvc plots show` uses (DVC's built-in ones and the project's in .dvc/plots)
are filled by `dvc_render` and drawn by vl-convert, which bundles Vega: no browser, no network,
and the same data always gives the same bytes.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vl_convert
from dvc_render.vega import VegaRenderer

from tunixrt_dvc.errors import InvalidInput, Problem

RUN = "this run"  # the one revision a report shows (DVC's `rev` field)


@dataclass(frozen=True)
class Chart:
    name: str  # an id for the page and its tests
    title: str
    svg: str
    points: int  # data points drawn


def read_tsv(path: str | Path, column: str) -> list[tuple[float, float]]:
    """(step, value) rows of a DVCLive metric file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise InvalidInput([Problem(str(path), None, "<file>", e.strerror or str(e))]) from None
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            out.append((float(row["step"]), float(row[column])))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput([Problem(str(path), line, column, "not a number")]) from None
    return out


def _local_ids(svg: str, prefix: str) -> str:
    """The SVG's element ids (its clip paths) made unique to the chart: several charts share
    one page, and vl-convert numbers clip paths per process, not per drawing."""
    ids = dict.fromkeys(re.findall(r'\bid="([^"]+)"', svg))
    for k, old in enumerate(ids):
        ref = rf'\b(id="|url\(#|href="#){re.escape(old)}(?=[")])'
        svg = re.sub(ref, rf"\g<1>{prefix}-{k}", svg)
    return svg


def _draw(name: str, title: str, points: list[dict[str, Any]], **properties: Any) -> Chart:
    spec = VegaRenderer(points, name, title=title, **properties).get_filled_template()
    svg = _local_ids(vl_convert.vegalite_to_svg(spec), f"chart-{name}")
    return Chart(name, title, svg, len(points))


def line_chart(
    name: str,
    title: str,
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    x: str,
    y: str,
    template: str,
    template_dir: str | Path,
) -> Chart:
    """One line per series (told apart as DVC tells files apart), x and y as labelled."""
    points = [
        {x: px, y: py, "rev": RUN, "filename": label, "field": y}
        for label, rows in series.items()
        for px, py in rows
    ]
    return _draw(
        name,
        title,
        points,
        template=template,
        template_dir=str(template_dir),
        x=x,
        y=y,
        x_label=x,
        y_label=y,
        anchors_y_definitions=[{"filename": label, "field": y} for label in series],
    )


def grouped_bars(
    name: str,
    title: str,
    rows: list[dict[str, Any]],
    *,
    x: str,
    y: str,
    template_dir: str | Path,
) -> Chart:
    """Bars of `y` per `x`, before and after side by side (the `grouped_bar` template)."""
    points = [{**r, "rev": RUN} for r in rows]
    return _draw(
        name,
        title,
        points,
        template="grouped_bar",
        template_dir=str(template_dir),
        x=x,
        y=y,
        x_label=x,
        y_label=y,
    )
