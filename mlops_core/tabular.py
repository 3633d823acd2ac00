"""Reading CSV input files with one documented header rule, so no row is ever lost silently.

``mlops models save --example``, ``mlops predict`` and batch jobs all read CSV through
:func:`read_csv`, so a file means the same thing to every command.

The rule (also in ``docs/cli.md``):

1. ``--header`` / ``--no-header`` (``header=True/False``) always win.
2. Otherwise the first row is a header when its cells are exactly the model's input
   names (when the caller knows them), or when one of its cells is not a number while
   every cell below it in that column is a number (``sepal_length`` above ``5.1``).
3. Otherwise there is no header: the first row is data. When in doubt a row is kept,
   never dropped, because a wrong header guess loses a prediction without a word.

Stdlib only: this module is imported by the CLI and must stay cheap.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from .errors import InvalidInputError, NotFoundError

__all__ = ["CsvTable", "read_csv", "has_header", "is_number"]


def is_number(cell: str) -> bool:
    """True for cells that parse as a finite or infinite float (``1``, ``-2.5e3``, ``nan``)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def has_header(rows: Sequence[Sequence[str]], names: Sequence[str] | None = None) -> bool:
    """Apply the header rule of this module to already split rows."""
    if not rows:
        return False
    first = [c.strip() for c in rows[0]]
    if names and first == [str(n) for n in names]:
        return True
    body = rows[1:]
    if not body:
        return False
    for col, cell in enumerate(first):
        if is_number(cell):
            continue
        below = [r[col].strip() for r in body if col < len(r)]
        if below and all(is_number(v) for v in below):
            return True
    return False


class CsvTable:
    """Rows of a CSV file as strings, and the header when there is one."""

    __slots__ = ("columns", "rows", "path")

    def __init__(self, columns: list[str] | None, rows: list[list[str]], path: Path) -> None:
        self.columns = columns
        self.rows = rows
        self.path = path

    def as_floats(self) -> list[list[float]]:
        """All cells as floats; a clear error names the first cell that is not a number."""
        out = []
        for i, row in enumerate(self.rows):
            try:
                out.append([float(c) for c in row])
            except ValueError:
                bad = next(c for c in row if not is_number(c))
                line = i + 1 + (1 if self.columns else 0)
                raise InvalidInputError(
                    f"{self.path}: line {line} has {bad!r}, which is not a number",
                    hint="numeric input only here; pass --header if the first row names the columns") from None
        return out


def read_csv(path: str | Path, *, header: bool | None = None, names: Sequence[str] | None = None) -> CsvTable:
    """Read ``path`` as CSV under this module's header rule.

    :param header: True or False to force the answer; None to detect it.
    :param names: the model's input names, when known; a first row equal to them is a header.
    :raises NotFoundError: the file does not exist.
    :raises InvalidInputError: the file has no data rows or ragged rows.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no input file {p}", hint="check the path; CSV, JSON (rows or a V2 body) are accepted")
    with open(p, newline="") as f:
        table = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if header is None:
        header = has_header(table, names)
    columns = [c.strip() for c in table[0]] if header and table else None
    rows = table[1:] if header else table
    if not rows:
        raise InvalidInputError(f"{p} has no data rows" + (" below its header" if header else ""),
                                hint="add at least one row; pass --no-header if the first row is data")
    width = len(columns) if columns else len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            line = i + 1 + (1 if columns else 0)
            raise InvalidInputError(f"{p}: line {line} has {len(row)} values, expected {width}",
                                    hint="every row needs the same number of comma-separated values")
    return CsvTable(columns, rows, p)
