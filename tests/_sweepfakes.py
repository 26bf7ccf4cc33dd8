"""A stand-in sweep Backend (no simulation or training): rows from arithmetic on the point.

In a module of its own so that every executor can ship it: spawned pool
workers import it from the test's ``sys.path``; Ray workers get it pickled by
value (``ray.cloudpickle.register_pickle_by_value``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

NODES = [("z_0_0_0", 0, "shared"), ("z_1_0_0", 1, "c"), ("z_1_0_1", 1, "private_masked")]


def expected_r2(mask_ratio: float, level: int, mask_index: int) -> float:
    return round(mask_ratio * (level + 1) / (mask_index + 2), 6)


class FakeBackend:
    """Logs every finished run_point call to ``log`` (O_APPEND, any process) and every attempt to ``log.attempts``.

    ``fail_at``: raise when ``fail_at`` points have finished (the next call, whichever point);
    ``interrupt_at``: the same with KeyboardInterrupt; ``fail_ids``: these points always raise;
    ``flaky_ids``: these points raise on their first attempt only; ``crash_once``: the first
    call kills its own process (as SIGKILL or the OOM killer would) and leaves this marker file;
    ``sleep``: seconds each point takes.
    """

    def __init__(self, log: Path, fail_at: int | None = None, interrupt_at: int | None = None, *,
                 fail_ids=(), flaky_ids=(), crash_once: Path | None = None, sleep: float = 0.0):
        self.log, self.fail_at, self.interrupt_at = str(log), fail_at, interrupt_at
        self.fail_ids, self.flaky_ids = set(fail_ids), set(flaky_ids)
        self.crash_once = None if crash_once is None else str(crash_once)
        self.sleep = sleep

    def prepare(self, cfg, out):
        return {"prepared": True}

    def _calls(self) -> int:
        p = Path(self.log)
        return len(p.read_text().splitlines()) if p.exists() else 0

    def attempts(self) -> list[str]:
        p = Path(self.log + ".attempts")
        return p.read_text().split() if p.exists() else []

    def run_point(self, cfg, point, context):
        assert context["prepared"]
        with open(self.log + ".attempts", "a") as f:
            f.write(point.point_id + "\n")
        if self.crash_once is not None and not os.path.exists(self.crash_once):
            Path(self.crash_once).write_text(point.point_id)
            os._exit(1)
        n = self._calls()
        if self.interrupt_at is not None and n == self.interrupt_at:
            raise KeyboardInterrupt
        if self.fail_at is not None and n == self.fail_at:
            raise RuntimeError("boom")
        if point.point_id in self.fail_ids:
            raise RuntimeError(f"boom at {point.label()}")
        if point.point_id in self.flaky_ids and self.attempts().count(point.point_id) == 1:
            raise RuntimeError("flaky")
        if self.sleep:
            time.sleep(self.sleep)
        with open(self.log, "a") as f:
            f.write(point.point_id + "\n")
        rows = []
        for j in range(cfg.eval_masks):
            for node, level, role in NODES:
                rows.append({"mask_kind": "random", "mask_index": j, "node": node, "level": level, "role": role,
                             "r2_noise": expected_r2(point.mask_ratio, level, j)})
        return rows

    def predict(self, cfg, context):
        return [{"mask_ratio": r, "mask_unit": u, "abstraction": r / u} for u in cfg.mask_units for r in cfg.mask_ratios]


class WhereBackend(FakeBackend):
    """FakeBackend whose points also leave a run folder file, and log which folder they were prepared in."""

    def prepare(self, cfg, out):
        return {"prepared": True, "out": str(out)}

    def run_point(self, cfg, point, context):
        rows = super().run_point(cfg, point, context)
        run = Path(context["out"]) / "runs" / point.point_id
        run.mkdir(parents=True, exist_ok=True)
        (run / "made-in.txt").write_text(context["out"])
        return rows
