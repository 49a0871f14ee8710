"""Files: atomic writes, stable JSON and TSV, hashes, and JSONL reading that names bad lines.

Every output is written beside its final path and renamed into place, so a reader (or DVC) never
sees a half-written file and a failure leaves what was there before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from tunixrt_dvc.errors import InvalidInput, Problem, problems_from_validation

M = TypeVar("M", bound=BaseModel)


# --- writing -------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Path:
    """A new empty file beside `path`, with the mode a plain `open()` would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(name)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write text (UTF-8, `\\n` line ends) or bytes to `path` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """A text file to write that appears at `path` only when the block ends without error."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new directory to fill that replaces `path` (a directory) when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, replacing it; `dst` is never seen half-written."""
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def json_text(data: Any) -> str:
    """Stable JSON: key order as given, 2-space indent, UTF-8 text, trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write(path, json_text(data))


def write_tsv(path: str | os.PathLike[str], rows: Sequence[dict]) -> None:
    """Tab-separated rows for `dvc plots` (columns from the first row; None is an empty cell)."""
    cols = list(rows[0]) if rows else []
    lines = ["\t".join(cols)] + ["\t".join(_cell(r.get(c)) for c in cols) for r in rows]
    atomic_write(path, "\n".join(lines) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


# --- hashing -------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: str | os.PathLike[str]) -> str:
    """One hash over a directory: relative paths and contents, in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


# --- reading -------------------------------------------------------------------------------


def read_json_object(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """A JSON object from a file, or InvalidInput naming the file and line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput([Problem(str(path), None, "<file>", f"{what} not found")]) from None
    except UnicodeDecodeError as e:
        problem = Problem(str(path), None, "<file>", f"invalid UTF-8: {e.reason}")
        raise InvalidInput([problem]) from None
    except json.JSONDecodeError as e:
        raise InvalidInput([Problem(str(path), e.lineno, "<json>", e.msg)]) from None
    if not isinstance(data, dict):
        raise InvalidInput([Problem(str(path), 1, "<root>", f"{what} must be a JSON object")])
    return data


def jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str | Problem]]:
    """(line number, text) of every non-blank line, or a Problem for a line that is not UTF-8.

    Raises InvalidInput if the file cannot be read.
    """
    file = str(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as e:
        raise InvalidInput([Problem(file, None, "<file>", f"not found ({e.strerror})")]) from None
    except OSError as e:
        raise InvalidInput([Problem(file, None, "<file>", e.strerror or str(e))]) from None
    with f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield line, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                msg = f"invalid UTF-8 (byte {e.start + 1} of the line)"
                yield line, Problem(file, line, "<encoding>", msg)


def read_jsonl(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    what: str,
    unique: str | None = "id",
    check: Callable[[M, int], list[Problem]] | None = None,
) -> list[M]:
    """Every line of a JSONL file validated as `model`; InvalidInput lists each bad line.

    `what` names the records (for an empty file); `unique` names a field no two records may
    share; `check(item, line)` adds problems of its own (repeats the caller defines, say).
    """
    file = str(path)
    items: list[M] = []
    problems: list[Problem] = []
    first: dict[Any, int] = {}
    for line, text in jsonl_lines(path):
        if isinstance(text, Problem):
            problems.append(text)
            continue
        try:
            item = model.model_validate_json(text)
        except ValidationError as e:
            problems.extend(problems_from_validation(e, file=file, line=line))
            continue
        if unique is not None:
            key = getattr(item, unique)
            if key in first:
                msg = f"duplicate {unique} {key!r} (first on line {first[key]})"
                problems.append(Problem(file, line, unique, msg))
                continue
            first[key] = line
        if check is not None and (found := check(item, line)):
            problems.extend(found)
            continue
        items.append(item)
    if not items and not problems:
        problems.append(Problem(file, None, "<file>", f"no {what}"))
    if problems:
        raise InvalidInput(problems)
    return items
