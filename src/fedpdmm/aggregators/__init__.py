"""Byzantine-robust aggregation rules and pre-aggregations on stacked rows `[n, d]`.

Build a rule by name, then call it or hand it to `aggregate`:

    rule = aggregators.get("trimmed_mean", f=2)       # [n, d] -> [d]
    pre = [aggregators.get_pre("nnm", f=2)]           # [n, d] -> [m, d], applied in order
    result = aggregators.aggregate(x, rule, pre)      # (value [d], state, num_dropped)
    result = aggregators.aggregate(x, rule, pre, RuleContext(center=v, generator=g))

Each built rule is a frozen dataclass (picklable, compared by value) whose fields are its
hyperparameters (`params`). Class attributes say how it is called; `rule.apply(x, context)` reads
them, so every rule is called the same way, with one `RuleContext` in and `(value, state)` out:

    stateless            agg(x) -> [d]
    needs_center         agg(x, center=v) -> [d]             (centered_clipping)
    needs_reference      agg(x, reference=g0) -> [d]          (fltrust)
    randomized           agg(x, generator=g) -> [d]           (dnc; pre: bucketing)
    stateful             agg(x, state=s, clients=ids) -> ([d], new_state)   (foolsgold)

`check(n)` raises `ConfigError` when a rule cannot take n rows ("bulyan needs n >= 4f + 3, got
n=10, f=2: ..."); `check_pipeline(rule, pre, n=...)` checks a whole chain. Rules never mutate x
and keep its dtype; they assume finite rows: `aggregate` removes rows with NaN or Inf first,
counts them, and lowers each f by that count. Randomness only comes from the `generator` passed.
"""

from fedpdmm.aggregators._base import Aggregator, PreAggregator, RuleContext
from fedpdmm.aggregators._kernels import finite_rows
from fedpdmm.aggregators.clipping import CenteredClipping
from fedpdmm.aggregators.coordinate import Meamed, Mean, Median, TrimmedMean
from fedpdmm.aggregators.distance import Bulyan, GeometricMedian, Krum, MultiKrum, krum_scores
from fedpdmm.aggregators.pre import ARC, NNM, Bucketing, Clip
from fedpdmm.aggregators.registry import (
    PRE_AGGREGATIONS,
    RULES,
    get,
    get_pre,
    names,
    pre_names,
)
from fedpdmm.aggregators.robust import AggregateResult, aggregate, check_pipeline
from fedpdmm.aggregators.similarity import (
    DnC,
    FLTrust,
    FoolsGold,
    FoolsGoldState,
    foolsgold_weights,
)

__all__ = [
    "ARC",
    "NNM",
    "PRE_AGGREGATIONS",
    "RULES",
    "AggregateResult",
    "Aggregator",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "Clip",
    "DnC",
    "FLTrust",
    "FoolsGold",
    "FoolsGoldState",
    "GeometricMedian",
    "Krum",
    "Meamed",
    "Mean",
    "Median",
    "MultiKrum",
    "PreAggregator",
    "RuleContext",
    "TrimmedMean",
    "aggregate",
    "check_pipeline",
    "finite_rows",
    "foolsgold_weights",
    "get",
    "get_pre",
    "krum_scores",
    "names",
    "pre_names",
]
