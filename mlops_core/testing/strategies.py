"""Hypothesis strategies for the data that crosses plugin lines.

Names, aliases and tags that the core accepts; artifact references and lineage;
V2 tensor specs, signatures and tensors (JSON form, and numpy arrays when numpy
is installed); bundle manifests that pass :func:`mlops_core.bundle.validate_manifest`
and the published JSON Schema; and bundle *contents* (a model plus its files) to
save and load for real::

    from hypothesis import given
    from mlops_core.testing import strategies as mst

    @given(mst.signatures())
    def test_signature_round_trip(sig):
        assert Signature.from_dict(sig.to_dict()) == sig
"""

from __future__ import annotations

import datetime as _dt
import string
from typing import Any

from hypothesis import strategies as st

from ..entities import DATATYPES, ArtifactRef, Lineage, Signature, TensorSpec

__all__ = [
    "model_names", "aliases", "tag_keys", "tag_values", "tag_dicts", "artifact_refs", "lineages",
    "datatypes", "shapes", "tensor_specs", "signatures", "v2_tensors", "numpy_arrays",
    "sha256_hex", "artifact_keys", "manifests", "bundle_files", "doubling_models",
]

_ALNUM = string.ascii_letters + string.digits
_ZONES = [_dt.timezone.utc, _dt.timezone(_dt.timedelta(hours=5, minutes=30)), _dt.timezone(_dt.timedelta(hours=-7))]


def model_names() -> st.SearchStrategy[str]:
    """Valid model names: 1-128 of letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return st.builds(lambda first, rest: first + rest, st.sampled_from(_ALNUM),
                     st.text(alphabet=_ALNUM + "._-", max_size=40))


def aliases() -> st.SearchStrategy[str]:
    """Valid aliases (never the reserved 'latest')."""
    return st.builds(lambda first, rest: first + rest, st.sampled_from(string.ascii_letters),
                     st.text(alphabet=_ALNUM + "_-", max_size=20)).filter(lambda a: a != "latest")


def tag_keys() -> st.SearchStrategy[str]:
    return st.text(alphabet=_ALNUM + "_.-/:", min_size=1, max_size=30)


def tag_values() -> st.SearchStrategy[str]:
    """Any text, including empty strings and non-ASCII; never NUL, which PostgreSQL text refuses (so may any backend)."""
    return st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def tag_dicts(max_size: int = 4) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(tag_keys(), tag_values(), max_size=max_size)


def sha256_hex() -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def artifact_refs() -> st.SearchStrategy[ArtifactRef]:
    uris = st.sampled_from(["file:///tmp/artifacts", "memory://kit", "s3://bucket/models", "redis://localhost/0"])
    return st.builds(ArtifactRef, uri=uris, digest=sha256_hex().map(lambda h: "sha256:" + h))


def lineages() -> st.SearchStrategy[Lineage]:
    text = st.none() | st.text(alphabet=_ALNUM + ":/._-", min_size=1, max_size=40)
    return st.builds(Lineage, source_run=text, dataset_uri=text,
                     parent_version=st.none() | st.integers(min_value=1, max_value=10_000))


def datatypes(*, numeric_only: bool = False) -> st.SearchStrategy[str]:
    return st.sampled_from([d for d in DATATYPES if not (numeric_only and d == "BYTES")])


def shapes(max_dims: int = 3, max_side: int = 4, *, variable_batch: bool = False) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes; with ``variable_batch`` the first dimension may be -1 (any batch size)."""
    dims = st.lists(st.integers(min_value=0, max_value=max_side), min_size=1, max_size=max_dims)
    if variable_batch:
        return st.tuples(st.booleans(), dims).map(lambda p: tuple([-1, *p[1][1:]] if p[0] else p[1]))
    return dims.map(tuple)


def tensor_specs() -> st.SearchStrategy[TensorSpec]:
    return st.builds(TensorSpec, name=st.text(alphabet=_ALNUM + "_-", min_size=1, max_size=16),
                     datatype=datatypes(), shape=shapes(variable_batch=True))


def signatures() -> st.SearchStrategy[Signature]:
    specs = st.lists(tensor_specs(), min_size=1, max_size=3, unique_by=lambda t: t.name)
    return st.builds(Signature, inputs=specs, outputs=specs,
                     input_kind=st.sampled_from(["ndarray", "dataframe", "dict"]))


def _values(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=8)
    if datatype.startswith("FP"):
        width = {"FP16": 16, "FP32": 32, "FP64": 64}[datatype]
        return st.floats(width=width, allow_nan=False, allow_infinity=False)
    bits = int(datatype.lstrip("UINT"))
    if datatype.startswith("U"):
        return st.integers(min_value=0, max_value=2 ** bits - 1)
    return st.integers(min_value=-(2 ** (bits - 1)), max_value=2 ** (bits - 1) - 1)


@st.composite
def v2_tensors(draw: Any, datatype: str | None = None, shape: tuple[int, ...] | None = None,
               name: str | None = None) -> dict[str, Any]:
    """A V2 JSON tensor ``{"name", "datatype", "shape", "data"}`` whose flat data fits shape and datatype."""
    dt = datatype or draw(datatypes())
    sh = shape if shape is not None else draw(shapes())
    count = 1
    for d in sh:
        count *= d
    data = draw(st.lists(_values(dt), min_size=count, max_size=count))
    return {"name": name or draw(st.text(alphabet=_ALNUM, min_size=1, max_size=8)), "datatype": dt,
            "shape": list(sh), "data": data}


def numpy_arrays(datatype: str | None = None) -> st.SearchStrategy[Any]:
    """numpy arrays of a V2 numeric datatype (needs numpy; skips the strategy's user otherwise)."""
    import numpy as np
    from hypothesis.extra import numpy as hnp

    dtypes = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
              "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
    dt = st.just(datatype) if datatype else st.sampled_from(sorted(dtypes))
    return dt.flatmap(lambda d: hnp.arrays(np.dtype(dtypes[d]), hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                                           elements={"allow_nan": False} if d.startswith("FP") else None))


def artifact_keys() -> st.SearchStrategy[str]:
    """Safe relative POSIX keys that ArtifactStore accepts."""
    part = st.text(alphabet=_ALNUM + "_-", min_size=1, max_size=12) | st.text(
        alphabet=_ALNUM + "._-", min_size=3, max_size=12).filter(lambda p: p.strip(".") == p)
    return st.lists(part, min_size=1, max_size=4).map("/".join)


def _file_entries() -> st.SearchStrategy[list[dict[str, Any]]]:
    entry = st.fixed_dictionaries({"path": artifact_keys(), "sha256": sha256_hex(),
                                   "size": st.integers(min_value=0, max_value=2 ** 40)})
    return st.lists(entry, min_size=1, max_size=5, unique_by=lambda e: e["path"]).filter(
        lambda es: all(e["path"] != "manifest.json" for e in es)
        and not any(a["path"].startswith(b["path"] + "/") for a in es for b in es))  # no file is another's folder


def manifests() -> st.SearchStrategy[dict[str, Any]]:
    """Manifest dicts that the core's validator and the published JSON Schema both accept."""
    versions = st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?\Z")
    requirement = st.fixed_dictionaries({"name": st.text(alphabet=_ALNUM + "-_.", min_size=1, max_size=20),
                                         "version": versions})
    return st.fixed_dictionaries(
        {
            "schema": st.just("mlops-bundle/1"),
            "format": st.sampled_from(["cloudpickle", "onnx", "command"]) | st.text(alphabet=_ALNUM, min_size=1, max_size=10),
            "files": _file_entries(),
            "python": st.fixed_dictionaries({"version": versions}, optional={"implementation": st.just("cpython")}),
            "requirements": st.lists(requirement, max_size=3),
            "created_at": st.datetimes(timezones=st.sampled_from(_ZONES)).map(lambda d: d.isoformat()),
            "created_by": st.fixed_dictionaries({"name": st.just("mlops-core"), "version": versions}),
        },
        optional={
            "signature": st.none() | signatures().map(lambda s: s.to_dict()),
            "model_class": st.just("mlops_core.testing.models.DoublingModel"),
            "metadata": st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3),
        },
    )


def bundle_files() -> st.SearchStrategy[dict[str, bytes]]:
    """Extra files to put into a bundle: relative path -> bytes (no path is a folder of another)."""
    return st.dictionaries(artifact_keys(), st.binary(max_size=4096), min_size=1, max_size=4).filter(
        lambda files: not any(a != b and b.startswith(a + "/") for a in files for b in files)
        and "manifest.json" not in files)


def doubling_models() -> st.SearchStrategy[Any]:
    """Distinct picklable models (``predict(x) == 2 * x``) for bundle round trips."""
    from .models import DoublingModel

    return st.builds(DoublingModel, tag=st.text(max_size=16))
