"""The CSV header rule: detected the same way everywhere, and no row is ever dropped silently."""

from __future__ import annotations

import csv
import io
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core.errors import InvalidInputError, NotFoundError
from mlops_core.tabular import has_header, read_csv

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
identifiers = st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(lambda s: s.lower() not in ("nan", "inf", "infinity"))


def _write(tmp_path, rows, name="rows.csv"):
    path = tmp_path / name
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_text(buf.getvalue())
    return path


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n_rows=st.integers(1, 20), n_cols=st.integers(1, 6))
def test_numeric_rows_without_header_are_all_kept(tmp_path_factory, data, n_rows, n_cols):
    rows = [[repr(data.draw(finite)) for _ in range(n_cols)] for _ in range(n_rows)]
    table = read_csv(_write(tmp_path_factory.mktemp("csv"), rows))
    assert table.columns is None
    assert len(table.rows) == n_rows


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n_rows=st.integers(1, 20), n_cols=st.integers(1, 6))
def test_a_named_header_above_numbers_is_detected(tmp_path_factory, data, n_rows, n_cols):
    names = data.draw(st.lists(identifiers, min_size=n_cols, max_size=n_cols, unique=True))
    rows = [[repr(data.draw(finite)) for _ in range(n_cols)] for _ in range(n_rows)]
    table = read_csv(_write(tmp_path_factory.mktemp("csv"), [names, *rows]))
    assert table.columns == names
    assert len(table.rows) == n_rows


def test_a_single_row_is_data_unless_it_is_the_models_names(tmp_path):
    path = _write(tmp_path, [["a", "b"]])
    assert read_csv(path).rows == [["a", "b"]]
    with pytest.raises(InvalidInputError, match="no data rows below its header"):
        read_csv(path, names=["a", "b"])


def test_all_text_columns_are_data_when_in_doubt(tmp_path):
    path = _write(tmp_path, [["red", "big"], ["blue", "small"]])
    assert read_csv(path).columns is None and len(read_csv(path).rows) == 2
    assert read_csv(path, names=["red", "big"]).columns == ["red", "big"]


def test_flags_win_over_detection(tmp_path):
    path = _write(tmp_path, [["1", "2"], ["3", "4"]])
    forced = read_csv(path, header=True)
    assert forced.columns == ["1", "2"] and forced.rows == [["3", "4"]]
    words = _write(tmp_path, [["x", "y"], ["1", "2"]], "words.csv")
    assert read_csv(words, header=False).rows == [["x", "y"], ["1", "2"]]


def test_has_header_rule():
    assert has_header([["x"], ["1"]])
    assert not has_header([["1"], ["2"]])
    assert not has_header([["x"], ["y"]])
    assert has_header([["1", "label"], ["2", "3"]])


def test_bad_files_get_errors_with_hints(tmp_path):
    with pytest.raises(NotFoundError) as missing:
        read_csv(tmp_path / "nope.csv")
    assert missing.value.hint
    ragged = _write(tmp_path, [["1", "2"], ["3"]])
    with pytest.raises(InvalidInputError, match="line 2 has 1 values, expected 2"):
        read_csv(ragged)
    text = _write(tmp_path, [["x", "y"], ["1", "oops"]], "text.csv")
    with pytest.raises(InvalidInputError, match="'oops'"):
        read_csv(text, header=True).as_floats()
