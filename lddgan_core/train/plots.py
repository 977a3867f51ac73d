"""Loss curves drawn with PIL (no plotting dependency): uint8 [H, W, 3] arrays, saved with images.save_png."""
from __future__ import annotations

import math

import numpy as np

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def loss_curve(history: list[dict], keys=("d_loss", "g_adv", "rec", "w"), x_key: str = "step",
               width: int = 640, height: int = 360, title: str | None = None) -> np.ndarray:
    """Plot history[i][key] against history[i][x_key] for each key present: uint8 [height, width, 3].

    The y range covers the 1st..99th percentile of all plotted values (one diverging step does not flatten
    the rest); values outside are clipped to the frame. An empty history gives a frame saying so."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 12, 24, 30  # the legend (and title) live in the top margin
    pw, ph = width - left - right, height - top - bottom
    if title:
        dr.text((left + pw - 7 * len(title), 6), title, fill=(0, 0, 0))
    series = []
    for k in keys:
        pts = [(float(r[x_key]), float(r[k])) for r in history
               if k in r and r[k] is not None and x_key in r and math.isfinite(float(r[k]))]
        if pts:
            series.append((k, pts))
    dr.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    if not series:
        dr.text((left + 10, top + ph // 2), "no losses logged yet", fill=(0, 0, 0))
        return np.asarray(img)
    xs = [x for _, pts in series for x, _ in pts]
    ys = np.array([y for _, pts in series for _, y in pts])
    x0, x1 = min(xs), max(xs)
    y0, y1 = float(np.percentile(ys, 1)), float(np.percentile(ys, 99))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1

    def px(x, y):
        y = min(max(y, y0), y1)
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    for v in _nice_ticks(y0, y1):
        _, yy = px(x0, v)
        dr.line([left, yy, left + pw, yy], fill=(230, 230, 230))
        dr.text((4, yy - 6), _fmt(v), fill=(0, 0, 0))
    for v in _nice_ticks(x0, x1):
        xx, _ = px(v, y0)
        dr.line([xx, top + ph, xx, top + ph + 4], fill=(0, 0, 0))
        dr.text((xx - 10, top + ph + 8), _fmt(v), fill=(0, 0, 0))
    for i, (k, pts) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        xy = [px(x, y) for x, y in pts]
        if len(xy) == 1:
            dr.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=c)
        else:
            dr.line(xy, fill=c, width=2)
        lx = left + 90 * i
        dr.line([lx, 12, lx + 16, 12], fill=c, width=3)
        dr.text((lx + 20, 6), k, fill=(0, 0, 0))
    dr.text((left + pw - 30, height - 14), x_key, fill=(0, 0, 0))
    return np.asarray(img)
