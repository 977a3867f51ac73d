"""The command line's one progress bar: bytes of a download (`lddgan download`) or iterations of a training run
(`lddgan train` / `finetune` / `train-autoencoder`, the recipes)."""
from __future__ import annotations

import sys
import time

# per unit: bar width in characters, seconds between redraws on a terminal
UNITS = {"bytes": (30, 0.1), "steps": (24, 0.2)}
# training losses shown on a steps line, in this order: (key in the logs, short name)
LOSS_KEYS = (("d_loss", "d"), ("g_adv", "g"), ("rec", "rec"), ("w", "w"), ("loss", "loss"), ("kl", "kl"),
             ("codebook", "vq"), ("d_weight", "dw"))


class ProgressBar:
    """One line on stderr: [#####.....], the count against its total and the rate since the count began; bytes
    as MB and MB/s, steps as step/total, the losses in `logs`, it/s and the ETA. Call it as
    ``bar(done, total)`` (bytes; total may be None) or ``bar(step, total, logs, preview)`` (a training run's
    progress callback, called after each iteration).

    On a terminal the line is redrawn in place (at most every 0.1 s for bytes, 0.2 s for steps) and ended when
    the count reaches its total; otherwise a line is written every `every` counts and when the count ends (every=0:
    only then; one line per file). A count that goes back (the next file, the next training stage) begins anew."""

    def __init__(self, unit: str, *, every: int = 0, stream=None):
        if unit not in UNITS:
            raise ValueError(f"ProgressBar unit must be one of {list(UNITS)}, got {unit!r}")
        self.unit, self.every = unit, every
        self.width, self.interval = UNITS[unit]
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0, self.start, self.last, self.state = None, 0, 0.0, (0, None, None)

    def __call__(self, done: int, total, logs: dict | None = None, preview=None, finished: bool = False):
        now = time.monotonic()
        if self.t0 is None or done < self.start:
            # a step is reported after its iteration, so the first one counts in the rate; a byte count starts at
            # what was already there (a resumed download)
            self.t0, self.start, self.last = now, done - 1 if self.unit == "steps" else done, 0.0
        self.state = (done, total, logs)
        finished = finished or (total is not None and done >= total)
        if not finished and (now - self.last < self.interval if self.tty else not self.every or done % self.every):
            return
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-6)
        line = self._bytes(done, total, rate) if self.unit == "bytes" else self._steps(done, total, rate, logs or {})
        self.stream.write(("\r" + line + "\x1b[K" + ("\n" if finished else "")) if self.tty else line + "\n")
        self.stream.flush()
        if finished:
            self.t0 = None

    def close(self):
        """End a line that did not reach its total (a file whose size was unknown)."""
        if self.t0 is not None:
            self(*self.state, finished=True)

    def _bar(self, done, total) -> str:
        n = int(self.width * done / total)
        return f"[{'#' * n}{'.' * (self.width - n)}]"

    def _bytes(self, done: int, total, rate: float) -> str:
        if total:
            count = f"{self._bar(done, total)} {done / 1e6:8.1f} / {total / 1e6:.1f} MB {100 * done / total:5.1f}%"
        else:
            count = f"{done / 1e6:8.1f} MB"
        return f"  {count}  {rate / 1e6:6.1f} MB/s"

    def _steps(self, step: int, total: int, rate: float, logs: dict) -> str:
        eta = (total - step) / rate if rate > 0 else 0.0
        vals = " ".join(f"{short} {logs[k]:.4g}" for k, short in LOSS_KEYS if k in logs)
        return (f"{self._bar(step, total)} {step}/{total} {100 * step / total:3.0f}%  {vals}  {rate:.2f} it/s  "
                f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
