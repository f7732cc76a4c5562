"""Typed scores of one evaluation: the JSON object of ``evaluation.json``, read and written through dataclasses.

The object on disk (``evaluation.json`` beside a stored run, printed by ``python -m core evaluate``
and ``python -m core run``) keeps its keys; code reads it through :class:`Scores` instead of string
keys. Two shapes exist:

- a scored run: ``chamfer``, ``accuracy``, ``completeness``, ``emd`` (normalised units, see
  :mod:`core.eval.metrics`), ``fscore`` / ``precision`` / ``recall`` keyed by ``f"{tau:g}"``
  (fractions in [0, 1]), ``points_scored``, ``alignment``, ``units``, ``options`` (the
  ``EvaluationOptions`` used), ``metrics_version``, and where available ``cameras`` (relative
  pose errors, degrees and fractions) and ``depth`` (AbsRel, delta < 1.25). ``cameras`` and
  ``depth`` may be present and empty (``{}``) when they were attempted but nothing was
  comparable (fewer than two usable poses; no view with enough valid depth);
- a run that could not be scored: ``{"error": "<message>"}``.

``Scores.from_json(obj).to_json() == obj`` for every object of these shapes, so a file read and
rewritten through it is byte-identical (``core.data.scene.to_json`` sorts keys). Anything else
(an unknown or missing key, a value of the wrong type) raises :class:`ScoresFormatError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from core.errors import UserError

_NUMBER = (int, float)


class ScoresFormatError(UserError):
    """An evaluation object with unknown, missing or mistyped keys (another version, or edited by hand)."""


def threshold_key(threshold: float) -> str:
    """How a threshold is written in a JSON key: an F-score ``tau`` (``0.01 -> "0.01"``) or a
    camera-error angle in degrees (``5.0 -> "5"`` in ``"rra@5"``)."""
    return f"{threshold:g}"


def _number(value: Any, where: str, optional: bool = False) -> float | int | None:
    """``value`` unchanged when it is a JSON number (or ``None`` if ``optional``); else ScoresFormatError.

    Values are kept as read (an ``int`` stays an ``int``) so that writing them back is exact.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ScoresFormatError(f"evaluation key {where!r} must be a number, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ScoresFormatError(f"evaluation key {where!r} must be a string, got {value!r}")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScoresFormatError(f"evaluation key {where!r} must be an object, got {value!r}")
    return value


def _check_keys(obj: Mapping[str, Any], where: str, required: set[str], optional: frozenset[str] = frozenset()
                ) -> None:
    unknown = set(obj) - required - optional
    missing = required - set(obj)
    if unknown or missing:
        parts = [f"{label} {sorted(keys)}" for label, keys in (("unknown", unknown), ("missing", missing)) if keys]
        raise ScoresFormatError(f"evaluation object {where}: {', '.join(parts)}")


@dataclass(frozen=True)
class ThresholdScores:
    """Tanks-and-Temples scores at one distance threshold ``tau`` (normalised units).

    ``precision``: fraction of the prediction's query points within ``tau`` of the ground truth;
    ``recall``: fraction of the ground truth's query points within ``tau`` of the prediction;
    ``fscore``: their harmonic mean (0 when both are 0).
    """

    tau: float
    precision: float
    recall: float
    fscore: float

    @property
    def key(self) -> str:
        """The JSON key of this threshold (``f"{tau:g}"``)."""
        return threshold_key(self.tau)


@dataclass(frozen=True)
class PointsScored:
    """How many points each score used (``points_scored`` on disk)."""

    prediction: int             # prediction query points (Chamfer / F-score), seeded subsample
    ground_truth: int           # ground-truth query points, seeded subsample
    emd_per_side: int           # points per side of the exact EMD
    prediction_after_crop: int  # aligned prediction points inside the grown ground-truth box
    prediction_input: int       # points of the reconstruction as given

    _KEYS = ("prediction", "ground_truth", "emd_per_side", "prediction_after_crop", "prediction_input")

    @classmethod
    def from_json(cls, obj: Any) -> PointsScored:
        obj = _object(obj, "points_scored")
        _check_keys(obj, "points_scored", set(cls._KEYS))
        for key in cls._KEYS:
            if isinstance(obj[key], bool) or not isinstance(obj[key], int):
                raise ScoresFormatError(f"evaluation key 'points_scored.{key}' must be a whole number, "
                                        f"got {obj[key]!r}")
        return cls(**{key: obj[key] for key in cls._KEYS})

    def to_json(self) -> dict:
        return {key: getattr(self, key) for key in self._KEYS}


@dataclass(frozen=True)
class AlignmentInfo:
    """The Sim(3) that took the prediction into the normalised ground-truth frame (``alignment`` on disk).

    ``x_gt = scale * rotation @ x_pred + translation``; ``rotation`` is 3x3 row-major, ``translation``
    in normalised units. ``method``: ``cameras``, ``global`` or ``none``, with ``+icp`` (or
    ``+icp(rigid)``) when ICP refined it; ``fitness`` (fraction of source points with a
    correspondence) and ``rmse`` (normalised units) are ICP's at its finest distance, ``None``
    without ICP.
    """

    method: str
    scale: float
    rotation: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
    translation: tuple[float, float, float]
    fitness: float | None = None
    rmse: float | None = None

    @classmethod
    def from_json(cls, obj: Any) -> AlignmentInfo:
        obj = _object(obj, "alignment")
        _check_keys(obj, "alignment", {"method", "scale", "rotation", "translation", "fitness", "rmse"})
        rotation, translation = obj["rotation"], obj["translation"]
        if not (isinstance(rotation, list) and len(rotation) == 3
                and all(isinstance(row, list) and len(row) == 3 for row in rotation)):
            raise ScoresFormatError(f"evaluation key 'alignment.rotation' must be 3x3, got {rotation!r}")
        if not (isinstance(translation, list) and len(translation) == 3):
            raise ScoresFormatError(f"evaluation key 'alignment.translation' must have 3 numbers, got {translation!r}")
        return cls(method=_string(obj["method"], "alignment.method"),
                   scale=_number(obj["scale"], "alignment.scale"),
                   rotation=tuple(tuple(_number(v, "alignment.rotation") for v in row) for row in rotation),
                   translation=tuple(_number(v, "alignment.translation") for v in translation),
                   fitness=_number(obj["fitness"], "alignment.fitness", optional=True),
                   rmse=_number(obj["rmse"], "alignment.rmse", optional=True))

    def to_json(self) -> dict:
        return {"method": self.method, "scale": self.scale, "rotation": [list(row) for row in self.rotation],
                "translation": list(self.translation), "fitness": self.fitness, "rmse": self.rmse}


@dataclass(frozen=True)
class CameraErrors:
    """Relative pose errors over all pairs of the scored views (``cameras`` on disk).

    ``pairs == 0`` means the errors were attempted but fewer than two views had usable poses on
    both sides (``{}`` on disk); the other fields are then NaN / empty. Angles in degrees;
    ``rra`` / ``rta`` map a threshold (degrees) to the fraction of pairs whose relative rotation /
    translation-direction error is below it; ``auc30`` is the mean over 1..30 degrees of the
    fraction of pairs with max(RRE, RTE) below the threshold.
    """

    pairs: int = 0
    rre_deg: float = math.nan
    rte_deg: float = math.nan
    auc30: float = math.nan
    rra: dict[float, float] = field(default_factory=dict)
    rta: dict[float, float] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        """True when at least one view pair was compared."""
        return self.pairs > 0

    @classmethod
    def from_json(cls, obj: Any) -> CameraErrors:
        obj = _object(obj, "cameras")
        if not obj:
            return cls()
        rra = {k: v for k, v in obj.items() if k.startswith("rra@")}
        rta = {k: v for k, v in obj.items() if k.startswith("rta@")}
        _check_keys(obj, "cameras", {"pairs", "rre_deg", "rte_deg", "auc30"}, frozenset(rra) | frozenset(rta))
        if isinstance(obj["pairs"], bool) or not isinstance(obj["pairs"], int) or obj["pairs"] < 1:
            raise ScoresFormatError(f"evaluation key 'cameras.pairs' must be a positive whole number, "
                                    f"got {obj['pairs']!r}")

        def by_threshold(entries: dict) -> dict[float, float]:
            out = {}
            for key, value in entries.items():
                try:
                    threshold = float(key.split("@", 1)[1])
                except ValueError:
                    raise ScoresFormatError(f"evaluation key 'cameras.{key}' does not end in a threshold") from None
                if threshold_key(threshold) != key.split("@", 1)[1]:
                    raise ScoresFormatError(f"evaluation key 'cameras.{key}' does not write its threshold as "
                                            f"{threshold_key(threshold)!r}")
                out[threshold] = _number(value, f"cameras.{key}")
            return dict(sorted(out.items()))

        return cls(pairs=obj["pairs"], rre_deg=_number(obj["rre_deg"], "cameras.rre_deg"),
                   rte_deg=_number(obj["rte_deg"], "cameras.rte_deg"), auc30=_number(obj["auc30"], "cameras.auc30"),
                   rra=by_threshold(rra), rta=by_threshold(rta))

    def to_json(self) -> dict:
        if not self.available:
            return {}
        out = {"pairs": self.pairs, "rre_deg": self.rre_deg, "rte_deg": self.rte_deg, "auc30": self.auc30}
        out.update({f"rra@{threshold_key(t)}": v for t, v in self.rra.items()})
        out.update({f"rta@{threshold_key(t)}": v for t, v in self.rta.items()})
        return out


@dataclass(frozen=True)
class DepthErrors:
    """Depth errors after per-view median scaling, over the object's pixels (``depth`` on disk).

    ``abs_rel``: mean |d - d_gt| / d_gt; ``delta1``: fraction of pixels with max(d/d_gt, d_gt/d) <
    1.25; both averaged over ``views``. ``views == 0`` means they were attempted but no view was
    comparable (``{}`` on disk); the errors are then NaN.
    """

    views: int = 0
    abs_rel: float = math.nan
    delta1: float = math.nan

    @property
    def available(self) -> bool:
        """True when at least one view was compared."""
        return self.views > 0

    @classmethod
    def from_json(cls, obj: Any) -> DepthErrors:
        obj = _object(obj, "depth")
        if not obj:
            return cls()
        _check_keys(obj, "depth", {"views", "abs_rel", "delta1"})
        if isinstance(obj["views"], bool) or not isinstance(obj["views"], int) or obj["views"] < 1:
            raise ScoresFormatError(f"evaluation key 'depth.views' must be a positive whole number, "
                                    f"got {obj['views']!r}")
        return cls(views=obj["views"], abs_rel=_number(obj["abs_rel"], "depth.abs_rel"),
                   delta1=_number(obj["delta1"], "depth.delta1"))

    def to_json(self) -> dict:
        return {"views": self.views, "abs_rel": self.abs_rel, "delta1": self.delta1} if self.available else {}


_SCORED_KEYS = {"chamfer", "accuracy", "completeness", "emd", "fscore", "precision", "recall", "points_scored",
                "alignment", "units", "options", "metrics_version"}
_OPTIONAL_KEYS = frozenset({"cameras", "depth"})


@dataclass(frozen=True)
class Scores:
    """The scores of one reconstruction against its scene's ground truth, or why it could not be scored.

    When ``error`` is ``None`` every measurement field is set: ``chamfer`` (= accuracy +
    completeness), ``accuracy`` (mean distance prediction -> ground truth), ``completeness`` (mean
    distance ground truth -> prediction) and ``emd`` (exact, mean transport distance), all in
    normalised units (ground truth in the unit sphere); ``thresholds`` in increasing ``tau``;
    ``cameras`` / ``depth`` only where the run had cameras / depth maps. When ``error`` is set
    (a run the protocol refused) every other field is ``None``; build it with :meth:`failed`.
    """

    chamfer: float | None = None
    accuracy: float | None = None
    completeness: float | None = None
    emd: float | None = None
    thresholds: tuple[ThresholdScores, ...] | None = None
    points_scored: PointsScored | None = None
    alignment: AlignmentInfo | None = None
    units: str | None = None
    options: dict[str, Any] | None = None   # the EvaluationOptions used, as JSON (tuples as lists)
    metrics_version: str | None = None
    cameras: CameraErrors | None = None
    depth: DepthErrors | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        measured = {name: getattr(self, name) for name in ("chamfer", "accuracy", "completeness", "emd", "thresholds",
                                                           "points_scored", "alignment", "units", "options",
                                                           "metrics_version", "cameras", "depth")}
        if self.error is not None:
            given = sorted(name for name, value in measured.items() if value is not None)
            if given:
                raise ValueError(f"a failed evaluation carries no scores; got {given}")
        else:
            absent = sorted(name for name, value in measured.items() if value is None and name not in _OPTIONAL_KEYS)
            if absent:
                raise ValueError(f"scores without an error need every measurement; missing {absent}")

    @classmethod
    def failed(cls, message: str) -> Scores:
        """The record of a run that could not be scored (``{"error": message}`` on disk)."""
        return cls(error=message)

    @property
    def scored(self) -> bool:
        """True when the run was scored (no ``error``)."""
        return self.error is None

    @property
    def taus(self) -> tuple[float, ...]:
        """The F-score thresholds scored, increasing (normalised units); empty for a failed run."""
        return tuple(t.tau for t in self.thresholds or ())

    def at(self, tau: float) -> ThresholdScores | None:
        """Precision, recall and F-score at ``tau`` (matched by its JSON key), or None if not scored."""
        key = threshold_key(tau)
        return next((t for t in self.thresholds or () if t.key == key), None)

    def fscore_at(self, tau: float) -> float | None:
        """F-score at ``tau`` (normalised units), or None when that threshold was not scored."""
        found = self.at(tau)
        return None if found is None else found.fscore

    def precision_at(self, tau: float) -> float | None:
        found = self.at(tau)
        return None if found is None else found.precision

    def recall_at(self, tau: float) -> float | None:
        found = self.at(tau)
        return None if found is None else found.recall

    @property
    def auc30(self) -> float | None:
        """Camera pose AUC@30 when camera errors were computed for at least one pair, else None."""
        return self.cameras.auc30 if self.cameras is not None and self.cameras.available else None

    # ----------------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Scores:
        """Read the evaluation object (module docstring); ScoresFormatError names what does not fit."""
        obj = _object(obj, "(top level)")
        if "error" in obj:
            _check_keys(obj, "of a failed run", {"error"})
            return cls.failed(_string(obj["error"], "error"))
        _check_keys(obj, "(top level)", _SCORED_KEYS, _OPTIONAL_KEYS)
        by_name = {name: _object(obj[name], name) for name in ("fscore", "precision", "recall")}
        keys = set(by_name["fscore"])
        if set(by_name["precision"]) != keys or set(by_name["recall"]) != keys:
            raise ScoresFormatError("evaluation keys 'fscore', 'precision' and 'recall' must list the same "
                                    f"thresholds; got {sorted(by_name['fscore'])}, {sorted(by_name['precision'])}, "
                                    f"{sorted(by_name['recall'])}")
        thresholds = []
        for key in keys:
            try:
                tau = float(key)
            except ValueError:
                raise ScoresFormatError(f"evaluation threshold {key!r} is not a number") from None
            if threshold_key(tau) != key:
                raise ScoresFormatError(f"evaluation threshold {key!r} is not written as {threshold_key(tau)!r}")
            thresholds.append(ThresholdScores(tau, *(_number(by_name[n][key], f"{n}.{key}")
                                                     for n in ("precision", "recall", "fscore"))))
        return cls(chamfer=_number(obj["chamfer"], "chamfer"), accuracy=_number(obj["accuracy"], "accuracy"),
                   completeness=_number(obj["completeness"], "completeness"), emd=_number(obj["emd"], "emd"),
                   thresholds=tuple(sorted(thresholds, key=lambda t: t.tau)),
                   points_scored=PointsScored.from_json(obj["points_scored"]),
                   alignment=AlignmentInfo.from_json(obj["alignment"]),
                   units=_string(obj["units"], "units"), options=dict(_object(obj["options"], "options")),
                   metrics_version=_string(obj["metrics_version"], "metrics_version"),
                   cameras=CameraErrors.from_json(obj["cameras"]) if "cameras" in obj else None,
                   depth=DepthErrors.from_json(obj["depth"]) if "depth" in obj else None)

    def to_json(self) -> dict:
        """The evaluation object as stored (same keys and values as :meth:`from_json` read)."""
        if self.error is not None:
            return {"error": self.error}
        out = {"chamfer": self.chamfer, "accuracy": self.accuracy, "completeness": self.completeness, "emd": self.emd,
               "fscore": {t.key: t.fscore for t in self.thresholds},
               "precision": {t.key: t.precision for t in self.thresholds},
               "recall": {t.key: t.recall for t in self.thresholds},
               "points_scored": self.points_scored.to_json(), "alignment": self.alignment.to_json(),
               "units": self.units, "options": dict(self.options), "metrics_version": self.metrics_version}
        if self.cameras is not None:
            out["cameras"] = self.cameras.to_json()
        if self.depth is not None:
            out["depth"] = self.depth.to_json()
        return out
