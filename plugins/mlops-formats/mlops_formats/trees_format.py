"""``xgboost`` and ``lightgbm``: gradient-boosted trees in their libraries' own model files.

XGBoost writes UBJSON (``model.ubj``; set ``MLOPS_XGBOOST_FILE_FORMAT=json`` before
saving for ``model.json``), LightGBM its text format (``model.txt``). Neither
is a pickle: loading parses data, never code. A small ``model-info.json`` says
which wrapper to rebuild, taken from a fixed list of class names (never an
import path read from the bundle), and for LightGBM classifiers the class
labels. ``predict`` answers what the original object's ``predict`` answered:
labels for classifiers, values for regressors and boosters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlops_core.entities import Signature, TensorSpec
from mlops_core.errors import InvalidInputError
from mlops_core.signature import numpy_datatype
from mlops_core.interfaces import ModelFormat

from ._common import read_json, read_payload, require, write_json

INFO = "model-info.json"
_XGB_CLASSES = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
_LGB_CLASSES = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")


def _module_type(model: Any, module: str, names: Sequence[str]) -> str | None:
    mod = sys.modules.get(module)
    if mod is None:
        return None
    for name in names:
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and type(model) is cls:
            return name
    return None


# ------------------------------------------------------------------ xgboost
class XGBoostBoosterModel:
    """A bare ``xgboost.Booster`` with a numpy ``predict`` (``inplace_predict``, no DMatrix to build)."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, x: Any) -> Any:
        return self.booster.inplace_predict(x)

    __call__ = predict


class XGBoostFormat(ModelFormat):
    name = "xgboost"
    priority = 80  # above skops: XGBoost's scikit-learn wrappers are estimators too

    def can_save(self, model: Any) -> bool:
        return _module_type(model, "xgboost", ("Booster", *_XGB_CLASSES)) is not None

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        require("xgboost", "xgboost")
        kind = _module_type(model, "xgboost", ("Booster", *_XGB_CLASSES))
        if kind is None:
            raise InvalidInputError(f"the xgboost format cannot save a {type(model).__name__}",
                                    hint=f"pass an xgboost.Booster or one of {', '.join(_XGB_CLASSES)}")
        ext = os.environ.get("MLOPS_XGBOOST_FILE_FORMAT", "ubj").strip().lower()
        if ext not in ("ubj", "json"):
            raise InvalidInputError(f"MLOPS_XGBOOST_FILE_FORMAT={ext!r}", hint="use ubj (default) or json")
        payload = f"model.{ext}"
        model.save_model(str(Path(directory) / payload))
        return [payload, write_json(directory, INFO, {"library": "xgboost", "class": kind, "file": payload})]

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> Any:
        xgb = require("xgboost", "xgboost")
        info = read_json(directory, INFO)
        kind, payload = info.get("class"), info.get("file")
        if kind not in ("Booster", *_XGB_CLASSES) or payload not in ("model.ubj", "model.json"):
            raise InvalidInputError(f"{INFO} in {directory} names class {kind!r} and file {payload!r}",
                                    hint=f"expected Booster or one of {', '.join(_XGB_CLASSES)}, and model.ubj or model.json")
        raw = bytearray(read_payload(directory, payload))
        if kind == "Booster":
            booster = xgb.Booster()
            booster.load_model(raw)
            return XGBoostBoosterModel(booster)
        model = getattr(xgb, kind)()
        model.load_model(raw)
        return model

    def signature(self, directory: Path) -> Signature | None:
        """A bare Booster's predict needs a DMatrix, so its signature comes from the file: FP32 features in,
        whatever one zero row gives out; the scikit-learn wrappers infer theirs from the example."""
        if read_json(directory, INFO).get("class") != "Booster":
            return None
        import numpy as np

        model = self.load(directory, {})
        n = int(model.booster.num_features())
        out = np.asarray(model.predict(np.zeros((1, n), dtype=np.float32)))
        return Signature(inputs=[TensorSpec("input-0", "FP32", (-1, n))],
                         outputs=[TensorSpec("output-0", numpy_datatype(out.dtype), (-1, *out.shape[1:]))])

    def imported_modules(self, directory: Path) -> set[str]:
        # XGBoost's scikit-learn wrappers (XGBClassifier...) import scikit-learn when they are built;
        # a bare Booster does not, so its images stay without it.
        wrapper = read_json(directory, INFO).get("class") != "Booster"
        return {"xgboost", "numpy", "scipy"} | ({"sklearn"} if wrapper else set())


# ----------------------------------------------------------------- lightgbm
class LightGBMModel:
    """A ``lightgbm.Booster`` read from text, answering like the object that was saved."""

    def __init__(self, booster: Any, kind: str, classes: list[Any] | None) -> None:
        self.booster = booster
        self.kind = kind
        self.classes = classes

    def predict_proba(self, x: Any) -> Any:
        import numpy as np

        p = np.asarray(self.booster.predict(x))
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p

    def predict(self, x: Any) -> Any:
        import numpy as np

        if self.kind == "LGBMClassifier" and self.classes is not None:
            return np.asarray(self.classes)[np.argmax(self.predict_proba(x), axis=1)]
        return self.booster.predict(x)

    __call__ = predict


class LightGBMFormat(ModelFormat):
    name = "lightgbm"
    priority = 80

    def can_save(self, model: Any) -> bool:
        return _module_type(model, "lightgbm", ("Booster", *_LGB_CLASSES)) is not None

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        require("lightgbm", "lightgbm")
        kind = _module_type(model, "lightgbm", ("Booster", *_LGB_CLASSES))
        if kind is None:
            raise InvalidInputError(f"the lightgbm format cannot save a {type(model).__name__}",
                                    hint=f"pass a lightgbm.Booster or one of {', '.join(_LGB_CLASSES)}")
        booster = model if kind == "Booster" else model.booster_
        booster.save_model(str(Path(directory) / "model.txt"))
        info: dict[str, Any] = {"library": "lightgbm", "class": kind, "file": "model.txt"}
        if kind == "LGBMClassifier":
            info["classes"] = [c.item() if hasattr(c, "item") else c for c in model.classes_]
        return ["model.txt", write_json(directory, INFO, info)]

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> LightGBMModel:
        lgb = require("lightgbm", "lightgbm")
        info = read_json(directory, INFO)
        kind = info.get("class")
        if kind not in ("Booster", *_LGB_CLASSES):
            raise InvalidInputError(f"{INFO} in {directory} names class {kind!r}",
                                    hint=f"expected Booster or one of {', '.join(_LGB_CLASSES)}")
        text = read_payload(directory, "model.txt").decode("utf-8")
        return LightGBMModel(lgb.Booster(model_str=text), kind, info.get("classes"))

    def imported_modules(self, directory: Path) -> set[str]:
        return {"lightgbm", "numpy", "scipy"}


def xgboost_factory(config: Any, context: Any) -> XGBoostFormat:
    return XGBoostFormat()


def lightgbm_factory(config: Any, context: Any) -> LightGBMFormat:
    return LightGBMFormat()
