"""Multi-objective reward models on frozen features: compute backbone features once, cache them, and fit
per-objective heads (ridge, BT), learned static weights and an ArmoRM-style gate on the cache in seconds
(METHODS §2). `FrozenHeadsScorer` serves the result as a Scorer with per-objective scores and weights.

    from rewardkit.multiobjective import extract_features, fit_frozen_heads

    scorer = fit_frozen_heads(model, records, lambda r: r.subset, combination="gate", cache="feats/")
    print(scorer.fit_report.fit_seconds)
"""

from rewardkit.multiobjective.features import (
    FeatureCacheError,
    Features,
    extract_features,
    head_parameters,
    model_fingerprint,
    output_layer,
)
from rewardkit.multiobjective.gating import (
    LAMBDA_GRID,
    TAU,
    Decorrelation,
    GateFit,
    GatingNetwork,
    decorrelate,
    fit_gate,
    gated_score,
)
from rewardkit.multiobjective.heads import (
    RIDGE_ALPHAS,
    BTHeadFit,
    RidgeFit,
    StaticWeightsFit,
    fit_bt_head,
    fit_ridge,
    fit_static_weights,
    helpsteer_to_unit,
    unit_to_helpsteer,
)
from rewardkit.multiobjective.scorer import FitReport, FrozenHeadsScorer, fit_frozen_heads

__all__ = [
    "BTHeadFit", "Decorrelation", "FeatureCacheError", "Features", "FitReport", "FrozenHeadsScorer", "GateFit",
    "GatingNetwork", "LAMBDA_GRID", "RIDGE_ALPHAS", "RidgeFit", "StaticWeightsFit", "TAU", "decorrelate",
    "extract_features", "fit_bt_head", "fit_frozen_heads", "fit_gate", "fit_ridge", "fit_static_weights",
    "gated_score", "head_parameters", "helpsteer_to_unit", "model_fingerprint", "output_layer",
    "unit_to_helpsteer",
]
