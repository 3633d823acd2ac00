"""``skops``: scikit-learn models without pickle.

skops writes a zip of JSON schemas and numpy arrays; loading rebuilds only the
types it is told to trust. Trusted by default: what skops itself trusts
(scikit-learn estimators, numpy and scipy types), every other type of scikit-learn's
own package (``sklearn.*``, e.g. the compiled ``sklearn.tree._tree.Tree`` that skops
leaves out: code that is installed wherever the model is loaded anyway), plus the names in
``MLOPS_SKOPS_TRUSTED_TYPES`` (comma-separated fully qualified names, e.g.
``mypkg.transformers.Clip``), set in the environment of the process that loads
the model. Anything else is refused before it is built, with an error naming
every untrusted type. The trust list is never read from the bundle: a bundle
cannot vouch for itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlops_core.errors import IntegrityError
from mlops_core.interfaces import ModelFormat

from ._common import env_list, read_payload, require

PAYLOAD = "model.skops"
TRUST_ENV = "MLOPS_SKOPS_TRUSTED_TYPES"


#: Types from scikit-learn's own package are trusted on top of skops' defaults.
TRUSTED_PREFIXES = ("sklearn.",)


def _untrusted(needed: Sequence[str], trusted: Sequence[str]) -> list[str]:
    return sorted(t for t in set(needed) - set(trusted) if not t.startswith(TRUSTED_PREFIXES))


class UntrustedTypesError(IntegrityError):
    """A skops file that would build types nobody trusted."""


def _is_sklearn(model: Any) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


class SkopsFormat(ModelFormat):
    name = "skops"
    priority = 50  # any scikit-learn estimator; framework formats with sklearn wrappers rank higher

    def __init__(self, trusted: Sequence[str] | None = None) -> None:
        self.trusted = list(trusted) if trusted is not None else None

    def can_save(self, model: Any) -> bool:
        """Yes for a scikit-learn estimator that skops can write *and* load back with the default trust.

        A model holding a lambda, or a class of the user's own, would save but then
        need ``MLOPS_SKOPS_TRUSTED_TYPES`` to load: the automatic choice leaves such
        models to the next format (cloudpickle); ``format="skops"`` still saves them.
        The serialized bytes are kept for the ``save`` that follows, so the model is
        serialized once.
        """
        if not _is_sklearn(model):
            return False
        try:
            sio = require("skops.io", "skops")
            data = sio.dumps(model)
            if _untrusted(sio.get_untrusted_types(data=data), []):
                return False
        except Exception:  # skops cannot write it (e.g. a lambda inside): not ours
            return False
        self._last = (id(model), data)
        return True

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        sio = require("skops.io", "skops")
        last = getattr(self, "_last", None)
        self._last = None
        data = last[1] if last is not None and last[0] == id(model) else sio.dumps(model)
        (Path(directory) / PAYLOAD).write_bytes(data)
        return [PAYLOAD]

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> Any:
        sio = require("skops.io", "skops")
        data = read_payload(directory, PAYLOAD)
        trusted = self.trusted if self.trusted is not None else env_list(TRUST_ENV)
        needed = list(sio.get_untrusted_types(data=data))  # beyond skops' own defaults
        untrusted = _untrusted(needed, trusted)
        if untrusted:
            listed = ", ".join(untrusted)
            raise UntrustedTypesError(
                f"the skops model in {directory} uses {len(untrusted)} type(s) that are not trusted: {listed}",
                hint=f"if you trust them, set {TRUST_ENV}={','.join(untrusted)} in the environment of the process "
                     "that loads the model (the server's), then load it again",
            )
        # Everything skops would refuse is trusted (scikit-learn's own, or by the operator): pass exactly that list.
        return sio.loads(data, trusted=needed or None)

    def imported_modules(self, directory: Path) -> set[str]:
        modules = {"skops", "sklearn", "numpy", "scipy"}
        try:
            sio = require("skops.io", "skops")
            types = sio.get_untrusted_types(data=read_payload(directory, PAYLOAD))
        except Exception:
            return modules
        return modules | {t.split(".")[0] for t in types}


def factory(config: Any, context: Any) -> SkopsFormat:
    return SkopsFormat()
