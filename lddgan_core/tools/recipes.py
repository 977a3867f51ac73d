"""Recipes: the exact runs that produce the models the project ships.

`shapes` trains the default model (lddgan_core/models/lddgan_shapes32.safetensors) from nothing, on the CPU:
procedural shapes data (lddgan_core.data.shapes, seed 0) -> a KL f=4 autoencoder -> an LDDGAN (T=4) with the
paper's Weighted Learning -> the model saved in fp16 (fp32 would not fit the 15 MB budget).

    python -m lddgan_core.recipes shapes --out runs/shapes          # ~2 h on 2 CPU cores, resumable
    python -m lddgan_core.recipes shapes --out runs/smoke --quick   # minutes: the same pipeline, tiny budget

Each stage writes a run folder under --out and is resumed when the command runs again. Every number that
defines the shipped model is a default below; the model's provenance records the arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..atomic import atomic_write_text
from ..data.shapes import make_shapes, to_model_range, TRAIN_SEED
from ..errors import InputError
from ..eval import evaluate_model
from ..train.api import new_model, train_autoencoder, train_model, training_mode
from ..train.autoencoder import AETrainConfig, load_autoencoder
from ..train.config import autoencoder_config, default_discriminator, TrainConfig
from ..train.files import RunPaths
from ..train.latents import build_latents
from .train_cli import StopFlag, TrainBar

# the shipped default model: autoencoder and generator architectures
SHAPES_AUTOENCODER = dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)
SHAPES_GENERATOR = dict(nf=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2)
SHAPES_DEFAULTS = dict(images=20000, ae_steps=3000, ae_batch=32, ae_lr=4e-4, gan_steps=5000, gan_batch=32,
                       lr_g=2e-4, lr_d=1.25e-4, r1_gamma=0.02, lazy_reg=15, ema_decay=0.999, gamma=6.0,
                       timesteps=4, schedule="sigmoid", seed=0, scale_factor=6.25)
SHAPES_QUICK = dict(images=512, ae_steps=60, gan_steps=60, ae_batch=16, gan_batch=16)


def train_shapes(out: str, *, images: int, ae_steps: int, ae_batch: int, ae_lr: float, gan_steps: int,
                 gan_batch: int, lr_g: float, lr_d: float, r1_gamma: float, lazy_reg: int, ema_decay: float,
                 gamma: float, timesteps: int, schedule: str, seed: int, scale_factor: float | None = None,
                 autoencoder: dict | None = None, generator: dict | None = None, dtype: str = "fp16", log=None,
                 progress=None, should_stop=None) -> str:
    """Autoencoder + LDDGAN on shapes data; returns the path of the saved model (<out>/model_<dtype>.safetensors).
    The autoencoder is skipped when <out>/autoencoder/autoencoder.safetensors exists (finished run).
    scale_factor: the latent scale (None: estimated from the latents, which leaves them small next to the diffusion
    noise; the shipped model uses 6.25, half the estimate, after the latent-scale ablation in the README)."""


    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    os.makedirs(out, exist_ok=True)
    args = dict(images=images, ae_steps=ae_steps, ae_batch=ae_batch, ae_lr=ae_lr, gan_steps=gan_steps,
                gan_batch=gan_batch, lr_g=lr_g, lr_d=lr_d, r1_gamma=r1_gamma, lazy_reg=lazy_reg, ema_decay=ema_decay,
                gamma=gamma, timesteps=timesteps, schedule=schedule, seed=seed, dtype=dtype,
                autoencoder=autoencoder or SHAPES_AUTOENCODER, generator=generator or SHAPES_GENERATOR)
    if scale_factor is not None:  # recorded only when given (None: estimated)
        if not (isinstance(scale_factor, (int, float)) and scale_factor > 0):

            raise InputError(f"shapes recipe: scale_factor must be a positive number, got {scale_factor!r}")
        args["scale_factor"] = float(scale_factor)
    with open(os.path.join(out, "recipe.json"), "w", encoding="utf-8") as f:
        json.dump(args, f, indent=1)
    t0 = time.perf_counter()
    # always the training data seed: `seed` drives initialisation and noise only (seeds 1-4 are evaluation and
    # classifier data)
    x, _ = make_shapes(images, TRAIN_SEED, 32)
    x = to_model_range(x)
    log(f"shapes data: {images} images (seed {TRAIN_SEED}) in {time.perf_counter() - t0:.1f} s")

    ae_paths = RunPaths.in_dir(os.path.join(out, "autoencoder"), "autoencoder")
    if not os.path.isfile(ae_paths.model):
        cfg = AETrainConfig(steps=ae_steps, batch_size=ae_batch, lr=ae_lr, kl_weight=1e-6, seed=seed, log_every=50,
                            save_every=500, sample_every=1000)
        res = train_autoencoder(autoencoder_config(args["autoencoder"], 32), 32, images=x, cfg=cfg, paths=ae_paths,
                                progress=progress, should_stop=should_stop, log=log)
        if res.interrupted:
            raise KeyboardInterrupt("stopped during the autoencoder stage (state saved; run again to resume)")
    ae, size = load_autoencoder(ae_paths.model)
    log(f"autoencoder ready: {ae_paths.model}")

    gan_paths = RunPaths.in_dir(os.path.join(out, "lddgan"), "gan")
    with training_mode():
        lat = build_latents(ae, size, images=x, seed=seed, cache_dir=gan_paths.cache_dir, log=log)
    model = new_model((ae, size), args["generator"], lat, num_timesteps=timesteps, name="lddgan-shapes32",
                      seed=seed, scale_factor=args.get("scale_factor", "auto"))
    cfg = TrainConfig(steps=gan_steps, batch_size=gan_batch, lr_g=lr_g, lr_d=lr_d, rec_schedule=schedule,
                      gamma=gamma, r1_gamma=r1_gamma, lazy_reg=lazy_reg, ema_decay=ema_decay, seed=seed,
                      log_every=50, save_every=250, sample_every=1000)
    prov = {"source": "recipe shapes", "recipe": json.dumps(args, sort_keys=True), "images": images,
            "steps": gan_steps}
    res = train_model(model, lat, cfg, paths=gan_paths, progress=progress, should_stop=should_stop, log=log,
                      provenance=prov)
    if res.interrupted:
        raise KeyboardInterrupt("stopped during the LDDGAN stage (state saved; run again to resume)")
    path = os.path.join(out, f"model_{dtype}.safetensors")
    res.model.save(path, dtype=dtype)
    log(f"model: {path} ({os.path.getsize(path) / 1e6:.2f} MB); total {time.perf_counter() - t0:.0f} s")
    return path


# the Weighted Learning ablation (the paper's Table: adversarial only / + constant L1 / + Weighted Learning) at
# small scale: the default model's autoencoder and data, a smaller G and D, the same budget for every variant
ABLATION_VARIANTS = {
    "adv": dict(rec_schedule="off"),  # adversarial loss only
    "adv+rec": dict(rec_schedule="constant", rec_value=1.0),  # + L1 reconstruction, constant weight 1
    "adv+WL": dict(rec_schedule="sigmoid", gamma=6.0),  # + Weighted Learning (the paper's sigmoid decay)
}
ABLATION_GENERATOR = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), nz=50, z_emb_dim=128,
                          n_mlp=2)
ABLATION_DEFAULTS = dict(steps=1500, batch=16, lr_g=2e-4, lr_d=1.25e-4, r1_gamma=0.02, lazy_reg=15, ema_decay=0.999,
                         disc_ngf=32, n_eval=2000, images=20000)


def run_ablation(out: str, autoencoder: str, *, seeds=(0, 1, 2), variants=None, steps: int, batch: int, lr_g: float,
                 lr_d: float, r1_gamma: float, lazy_reg: int, ema_decay: float, disc_ngf: int, n_eval: int,
                 images: int, scale_factor: float | None = None, log=None, progress_factory=None,
                 should_stop=None) -> dict:
    """Train every (variant, seed) pair on the shapes data with the same budget and evaluate each model
    (lddgan_core.eval, shapes features, n_eval samples vs held-out data). Each run lives in <out>/<variant>_s<seed>
    and is resumed / skipped when finished (its eval.json exists). Returns {"runs": [...], "summary": {...}}
    and writes <out>/ablation.json and <out>/ablation.md (mean +- std over seeds). scale_factor: the latent
    scale of every model (None: estimated from the latents, as the shipped model's)."""



    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    variants = list(variants or ABLATION_VARIANTS)
    unknown = [v for v in variants if v not in ABLATION_VARIANTS]
    if unknown:
        raise InputError(f"ablation variants {unknown} are unknown; choose from {list(ABLATION_VARIANTS)}")
    if scale_factor is not None and not (isinstance(scale_factor, (int, float)) and scale_factor > 0):
        raise InputError(f"ablation scale_factor must be a positive number or None, got {scale_factor!r}")
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise InputError(f"ablation seeds must be integers >= 0, got {list(seeds)}")
    if len(seeds) < 3:
        log(f"note: {len(seeds)} seed(s); the mean +- std needs at least 3 to mean much")
    os.makedirs(out, exist_ok=True)
    ae, size = load_autoencoder(autoencoder)
    x, _ = make_shapes(images, TRAIN_SEED, 32)
    with training_mode():
        lat = build_latents(ae, size, images=to_model_range(x), seed=0, cache_dir=os.path.join(out, "cache"), log=log)
    disc = default_discriminator((ae.cfg.embed_dim, size // ae.cfg.downsample_factor,
                                  size // ae.cfg.downsample_factor), ngf=disc_ngf)
    runs = []
    for v in variants:
        for seed in seeds:
            d = os.path.join(out, f"{v}_s{seed}")
            ev_path = os.path.join(d, "eval.json")
            if os.path.isfile(ev_path):
                with open(ev_path, encoding="utf-8") as f:
                    row = json.load(f)
                have = (row.get("steps"), row.get("batch"), row.get("n_eval"), row.get("scale_factor_arg"))
                if have != (steps, batch, n_eval, scale_factor):
                    raise InputError(f"{ev_path}: a finished run with steps/batch/n_eval/scale factor {have}, but this "
                                     f"ablation asks for {(steps, batch, n_eval, scale_factor)}; use another --out")
                runs.append(row)
                continue
            model = new_model((ae, size), ABLATION_GENERATOR, lat, num_timesteps=4, name=f"ablation-{v}", seed=seed,
                              scale_factor="auto" if scale_factor is None else float(scale_factor))
            # EMA warm-up: with a plain 0.999 decay, 0.999^1500 = 22% of the EMA would still be the random init
            cfg = TrainConfig(steps=steps, batch_size=batch, lr_g=lr_g, lr_d=lr_d, r1_gamma=r1_gamma,
                              lazy_reg=lazy_reg, ema_decay=ema_decay, ema_warmup=True, seed=seed, log_every=50,
                              save_every=250, sample_every=0, **ABLATION_VARIANTS[v])
            t0 = time.perf_counter()
            log(f"ablation {v} seed {seed}: {steps} iterations, batch {batch}")
            res = train_model(model, lat, cfg, paths=RunPaths.in_dir(d), disc_config=dict(disc),
                              progress=progress_factory() if progress_factory else None, should_stop=should_stop,
                              log=log)
            if res.interrupted:
                raise KeyboardInterrupt(f"stopped during ablation run {d} (state saved; run again to resume)")
            train_s = time.perf_counter() - t0
            ev = evaluate_model(res.model, n=n_eval, seed=0)
            row = {"variant": v, "seed": seed, "train_seconds": train_s, "steps": steps, "batch": batch, "n_eval": n_eval,
                   "scale_factor_arg": scale_factor, "scale_factor": model.config.scale_factor,
                   "metrics": ev["generated"], "ceiling": ev["ceiling"], "eval": {k: ev[k] for k in ev
                                                                                  if k not in ("generated", "ceiling")}}
            atomic_write_text(ev_path, json.dumps(row, indent=1))
            runs.append(row)
            log(f"  {v} seed {seed}: " + ", ".join(f"{k} {row['metrics'][k]:.4g}" for k in _ABLATION_KEYS
                                                      if k in row["metrics"]))
    summary = _summarize(runs)
    result = {"runs": runs, "summary": summary, "settings": dict(seeds=list(seeds), steps=steps, batch=batch,
                                                                 generator=ABLATION_GENERATOR, disc=disc,
                                                                 n_eval=n_eval, images=images, scale_factor=scale_factor)}
    atomic_write_text(os.path.join(out, "ablation.json"), json.dumps(result, indent=1))
    atomic_write_text(os.path.join(out, "ablation.md"), ablation_table(summary, len(seeds)))
    return result


_ABLATION_KEYS = ("fid", "precision", "recall", "density", "coverage", "modes_covered", "modes_covered_at_threshold",
                  "kl_gen_data")


def _summarize(runs: list[dict]) -> dict:
    import statistics

    out: dict = {}
    for r in runs:
        out.setdefault(r["variant"], {k: [] for k in _ABLATION_KEYS})
        for k in _ABLATION_KEYS:
            if k in r["metrics"]:
                out[r["variant"]][k].append(float(r["metrics"][k]))
    summary = {v: {k: {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                       "n": len(xs)} for k, xs in d.items() if xs} for v, d in out.items()}
    ceiling = next((r["ceiling"] for r in runs if r.get("ceiling")), None)
    if ceiling:  # held-out real vs held-out real at the same n: the best any model can score
        summary["real vs real (ceiling)"] = {k: {"mean": float(ceiling[k]), "std": 0.0, "n": 1}
                                             for k in _ABLATION_KEYS if k in ceiling}
    return summary


def ablation_table(summary: dict, n_seeds: int) -> str:
    """Markdown: one row per variant, mean +- std (sample std over seeds) per metric."""
    keys = [k for k in _ABLATION_KEYS if any(k in s for s in summary.values())]
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for v, s in summary.items():
        lines.append(f"| {v} | " + " | ".join(
            "-" if k not in s else f"{s[k]['mean']:.3f}" + (f" +- {s[k]['std']:.3f}" if s[k]["n"] > 1 else "")
            for k in keys) + " |")
    return "\n".join(lines) + f"\n\n(mean +- std over {n_seeds} seeds)\n"


# recipe probes: short GAN-stage runs on the shipped default model's autoencoder, for choosing the recipe by
# measurement (README: "Recipe probes"). Overrides (JSON): "gen" (GeneratorConfig fields over SHAPES_GENERATOR),
# "scale" (latent scale), "T", "ngf" and "disc" (discriminator), "images", "eval_every", "n_eval", and any
# TrainConfig field ("steps", "lr_d", "d_augment", ...).
PROBE_TRAIN = dict(steps=2000, batch_size=32, lr_g=2e-4, lr_d=1.25e-4, r1_gamma=0.02, lazy_reg=15, ema_decay=0.999,
                   ema_warmup=True, seed=0)


def run_probe(out: str, overrides: dict, log=None) -> list[dict]:
    """Train the GAN stage with `overrides` and evaluate the EMA model (n_eval samples vs held-out shapes) every
    eval_every iterations; rows go to <out>/log.jsonl and are returned. Not resumable: a probe is minutes to an
    hour; the model of the last evaluation is <out>/model.safetensors (fp16)."""
    from ..hub.shipped import DEFAULT_MODEL
    from ..model import load_model
    from ..train.trainer import GANTrainer

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    ov = dict(overrides)
    os.makedirs(out, exist_ok=True)
    base = load_model(DEFAULT_MODEL)
    x, _ = make_shapes(int(ov.pop("images", SHAPES_DEFAULTS["images"])), TRAIN_SEED, 32)
    with training_mode():
        lat = build_latents(base.autoencoder, 32, images=to_model_range(x), seed=0,
                            cache_dir=os.path.join(out, "cache"), log=log)
    gen = {**SHAPES_GENERATOR, **ov.pop("gen", {})}
    model = new_model(base, gen, lat, num_timesteps=int(ov.pop("T", SHAPES_DEFAULTS["timesteps"])), seed=0,
                      scale_factor=ov.pop("scale", SHAPES_DEFAULTS["scale_factor"]))
    disc = {**default_discriminator(model.latent_shape, ngf=int(ov.pop("ngf", 64))), **ov.pop("disc", {})}
    eval_every, n_eval = int(ov.pop("eval_every", 500)), int(ov.pop("n_eval", 1000))
    cfg = TrainConfig(**{**PROBE_TRAIN, **ov})
    tr = GANTrainer(model, lat, cfg, disc_config=disc)
    rows, acc, train_s = [], {}, 0.0
    with open(os.path.join(out, "log.jsonl"), "a", encoding="utf-8") as f:
        while tr.step < cfg.steps:
            t0 = time.perf_counter()
            logs = tr.train_step()
            train_s += time.perf_counter() - t0
            for k in ("d_loss", "g_adv", "rec"):
                acc.setdefault(k, []).append(logs[k])
            if tr.step % eval_every and tr.step != cfg.steps:
                continue
            m = tr.export_model()
            g = evaluate_model(m, n=n_eval, seed=0)["generated"]
            row = {"step": tr.step, "train_s": round(train_s), "w": round(logs["w"], 4),
                   **{k: round(sum(v[-200:]) / len(v[-200:]), 4) for k, v in acc.items()},
                   **{k: g[k] for k in ("fid", "precision", "recall", "density", "coverage",
                                        "modes_covered_at_threshold", "kl_gen_data", "unrecognised") if k in g}}
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            log(json.dumps(row))
            m.save(os.path.join(out, "model.safetensors"), dtype="fp16")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lddgan_core.recipes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="recipe", required=True)
    s = sub.add_parser("shapes", help="the shipped default model (shapes data, 32 px)")
    s.add_argument("--out", required=True)
    s.add_argument("--quick", action="store_true", help="a tiny budget (smoke test of the pipeline)")
    for k, v in SHAPES_DEFAULTS.items():
        s.add_argument("--" + k.replace("_", "-"), type=type(v), default=None, help=f"default {v}")
    s.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    b = sub.add_parser("ablation", help="the Weighted Learning ablation (3 variants x seeds, evaluated)")
    b.add_argument("--out", required=True)
    b.add_argument("--autoencoder", required=True, help="e.g. <shapes run>/autoencoder/autoencoder.safetensors")
    b.add_argument("--seeds", default="0,1,2")
    b.add_argument("--variants", default=",".join(ABLATION_VARIANTS))
    for k, v in ABLATION_DEFAULTS.items():
        b.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    b.add_argument("--scale-factor", type=float, default=None,
                   help="latent scale of every model (default: estimated from the latents, as the shipped model's)")
    b.add_argument("--threads", type=int, default=None)
    q = sub.add_parser("probe", help="a short GAN-stage run with recipe overrides, evaluated every N iterations")
    q.add_argument("--out", required=True)
    q.add_argument("--set", default="{}", help='overrides as JSON, e.g. \'{"gen": {"use_tanh": false}, "scale": 2.5, '
                                              '"ngf": 32, "steps": 3000}\'')
    q.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    if a.recipe == "probe":
        try:
            overrides = json.loads(a.set)
        except ValueError as e:
            print(f"error: --set is not JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(overrides, dict):
            print("error: --set must be a JSON object", file=sys.stderr)
            return 2
        run_probe(a.out, overrides)
        return 0
    if a.recipe == "ablation":
        with StopFlag() as stop:
            try:
                res = run_ablation(a.out, a.autoencoder, seeds=[int(s) for s in a.seeds.split(",")],
                                   variants=a.variants.split(","), progress_factory=lambda: TrainBar(250),
                                   should_stop=stop, scale_factor=a.scale_factor,
                                   **{k: getattr(a, k) for k in ABLATION_DEFAULTS})
            except KeyboardInterrupt as e:
                print(str(e), file=sys.stderr)
                return 130
        print(ablation_table(res["summary"], len(a.seeds.split(","))))
        return 0
    kw = dict(SHAPES_DEFAULTS)
    if a.quick:
        kw.update(SHAPES_QUICK)
    kw.update({k: getattr(a, k) for k in SHAPES_DEFAULTS if getattr(a, k) is not None})

    with StopFlag() as stop:
        try:
            path = train_shapes(a.out, dtype=a.dtype, progress=TrainBar(50), should_stop=stop, **kw)
        except KeyboardInterrupt as e:
            print(str(e), file=sys.stderr)
            return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
