"""Early stopping on an eval metric, the rule Kipf & Welling (2017) train GCN with: stop when the validation loss is
larger than the mean of its previous ``window`` evaluations.

    stop at evaluation t (t = 1, 2, ...)  ⇔  t > window  and  v_t > (v_{t-window} + ... + v_{t-1}) / window

for ``mode = "min"`` (a loss); ``"max"`` (an accuracy) stops when ``v_t`` is below that mean. The window counts
evaluations (``config.eval_every_*``), so with one evaluation per epoch it is epochs, as in the paper. Kipf's code
(``gcn/train.py``) checks from its 12th evaluation on (``epoch > 10``, 0-based); here from the 11th, the first with
10 previous ones. Its validation loss includes the L2 term; ours is the cross-entropy alone.

The decision depends on the metric's history only, so a resumed run recovers it from the eval records of
``metrics.jsonl`` up to the restored step and decides as the uninterrupted run did (a workdir whose metrics.jsonl
was deleted resumes with an empty history: it stops later, never earlier). The run ends at the evaluation
that stopped it: that state is checkpointed, and it is what the final evaluation and ``eval.py`` report (the last
model, as Kipf's code evaluates it, not the best one).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from cnn.errors import ConfigError

MODES = ("min", "max")


@dataclasses.dataclass
class EarlyStopping:
    metric: str
    window: int
    mode: str
    history: list[float] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, metrics: dict[str, str]) -> EarlyStopping | None:
        """The rule ``config.early_stopping`` asks for (None when its metric is ""), checked against the task's
        eval ``metrics``."""
        c = config.get("early_stopping")
        if c is None or not c.metric:
            return None
        if c.metric not in metrics:
            raise ConfigError(f"config.early_stopping.metric={c.metric!r} is not an eval metric of this task; choose "
                              f"from {sorted(metrics)} (or '' for no early stopping)")
        if isinstance(c.window, bool) or not isinstance(c.window, int) or c.window < 1:
            raise ConfigError(f"config.early_stopping.window must be a positive integer (evaluations), got "
                              f"{c.window!r}")
        if c.mode not in MODES:
            raise ConfigError(f"config.early_stopping.mode must be one of {list(MODES)}, got {c.mode!r}")
        return cls(c.metric, c.window, c.mode)

    def restore(self, records: list[dict], step: int) -> None:
        """The history of a run resumed at ``step``: its eval records (``metrics.jsonl``) up to that step."""
        self.history = [r[self.metric] for r in records
                        if r.get("split") == "eval" and r["step"] <= step and self.metric in r]

    def update(self, value: float) -> bool:
        """Add an evaluation's value; whether training stops here."""
        self.history.append(float(value))
        return self.stopped

    @property
    def stopped(self) -> bool:
        if len(self.history) <= self.window:
            return False
        newest, mean = self.history[-1], float(np.mean(self.history[-self.window - 1:-1]))
        return newest > mean if self.mode == "min" else newest < mean

    def reason(self) -> str:
        mean = float(np.mean(self.history[-self.window - 1:-1]))
        worse = "above" if self.mode == "min" else "below"
        return (f"eval {self.metric} {self.history[-1]:.4f} is {worse} the mean of the previous {self.window} "
                f"evaluations, {mean:.4f}")
