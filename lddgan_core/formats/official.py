"""Import of the official LDDGAN release formats.

* Generator ``netG_*.pth``: a state dict whose keys may carry DDP's ``module.`` prefix. Its layout is one
  ``all_modules`` list walked in construction order plus ``z_transform.{1,3,5,...}``;
  ``generator_key_map`` rebuilds that order from the config and pairs every official key with ours.
* Autoencoder: an LDM Lightning ``.ckpt`` (``state_dict`` at top level or under ``first_stage_model.``) or a
  bare state dict. Our autoencoder keeps LDM's parameter names, so the map is the identity after the
  prefix and drop rules below.
* Hyper-parameters: JSON with ``generator`` (official argparse names), ``diffusion``, ``autoencoder``
  (``kind``/``target``, ``embed_dim``, ``n_embed``, ``ddconfig``), ``scale_factor`` and ``image_size``.

Loading is strict: every official tensor is used, every parameter of ours is filled, shapes are equal;
otherwise a CheckpointError lists what is missing, unexpected or mis-shaped.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Any, Callable

import torch

from ..config import AutoencoderConfig, DiffusionConfig, GeneratorConfig, ModelConfig
from ..errors import CheckpointError, ConfigError
from ..limits import check_finite_weights
from ..model import LDDGAN
from ..nets.generator import Generator
from ..version import __version__
from .safe_load import read_state_dict
from .weights_check import expected_shapes

# Official argparse options that do not change the inference architecture (training, paths, I/O).
_IGNORED_GENERATOR_ARGS = {
    "seed", "compute_fid", "measure_time", "epoch_id", "exp", "real_img_dir", "dataset", "batch_size",
    "num_epoch", "ngf", "lr_g", "lr_d", "beta1", "beta2", "no_lr_decay", "use_ema", "ema_decay", "r1_gamma",
    "lazy_reg", "save_content", "save_content_every", "save_ckpt_every", "num_proc_node", "num_process_per_node",
    "node_rank", "local_rank", "master_address", "master_port", "datadir", "t_emb_dim", "num_disc_layers",
    "rec_loss", "sigmoid_learning", "AutoEncoder_config", "AutoEncoder_ckpt", "resume", "ori_image_size",
    "fourier_scale", "progressive_combine", "resamp_with_conv", "beta_min", "beta_max", "num_timesteps",
    "use_geometric", "scale_factor", "net_type", "use_pytorch_wavelet",
}
# Architecture options our generator implements only in one setting (the one LDDGAN uses).
_FIXED_GENERATOR_ARGS = {
    "conditional": True, "fir": True, "resblock_type": "biggan", "progressive": "none",
    "embedding_type": "positional", "patch_size": 1,
}
# Autoencoder state-dict keys that belong to training, not to the autoencoder (dropped by rule).
_AE_DROP = re.compile(r"^(loss\.|model\.|model_ema\.|cond_stage_model\.|betas$|alphas_cumprod|"
                      r"alphas_cumprod_prev$|sqrt_|log_one_minus|posterior_|scale_factor$|logvar$|"
                      r"lvlb_weights$|ddim_|model_ema$)")


def _read_json(config) -> dict:
    if isinstance(config, dict):
        return config
    path = os.fspath(config)
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"official config {path!r}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"official config {path!r}: not valid JSON ({e})") from None


def _section(d: dict, name: str, where: str) -> dict:
    if name not in d or not isinstance(d[name], dict):
        raise ConfigError(f"{where}: missing section {name!r} (an object)")
    return d[name]


def _ints(v, name: str, where: str) -> tuple[int, ...]:
    """A list of ints; a single int (argparse nargs='+' with one value) is accepted as a one-item list."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{where}: {name} must be a list of integers, got {v!r}")
    return tuple(int(x) for x in v)


def _bool(v, name: str, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ConfigError(f"{where}: {name} must be true or false, got {v!r}")


def _num(v, name: str, where: str, cast=int, default=None):
    if v is None and default is not None:
        return default
    try:
        if isinstance(v, bool) or (cast is int and isinstance(v, str)):
            raise TypeError
        if cast is int and isinstance(v, float) and not (math.isfinite(v) and v == int(v)):
            raise TypeError  # 2.5 or nan is not silently truncated
        out = cast(v)
    except (TypeError, ValueError, OverflowError):
        kind = "a number (an integer)" if cast is int else "a number"
        raise ConfigError(f"{where}: {name} must be {kind}, got {v!r}") from None
    if cast is float and not math.isfinite(out):
        raise ConfigError(f"{where}: {name} must be a finite number, got {v!r}")
    return out


def parse_generator_args(g: dict, where: str = "official config", latent_size: int | None = None,
                         pixel_size: int | None = None) -> dict:
    """Official generator argparse values -> GeneratorConfig kwargs (nz / n_mlp / z_emb_dim may be absent)."""
    g = dict(g)
    norm = lambda v: v.lower() if isinstance(v, str) else v  # the official code lower-cases these options
    for k, want in _FIXED_GENERATOR_ARGS.items():
        if k in g and norm(g[k]) != want:
            raise ConfigError(f"{where}: generator.{k} = {g[k]!r} is not supported (LDDGAN uses {want!r})")
    if norm(g.get("net_type", "normal")) != "normal":
        raise ConfigError(f"{where}: generator.net_type = {g['net_type']!r} is not supported (only 'normal' NCSN++)")
    pin = norm(g.get("progressive_input", "residual"))
    if pin not in ("residual", "none"):
        raise ConfigError(f"{where}: generator.progressive_input = {g['progressive_input']!r} is not supported "
                          "(use 'residual' or 'none')")
    # The official test script runs G at --current_resolution (the latent size); --image_size is either
    # that same number (as in the fixtures) or the pixel size when current_resolution is given.
    latent = g.get("current_resolution", g.get("image_size"))
    if "current_resolution" not in g and latent_size is not None and latent in (None, pixel_size):
        latent = latent_size  # generator.image_size holds the pixel size: take the latent size from latent_shape
    missing = [k for k in ("num_channels", "num_channels_dae", "ch_mult", "num_res_blocks", "attn_resolutions")
               if k not in g] + ([] if latent is not None else ["image_size (the latent size)"])
    if missing:
        raise ConfigError(f"{where}: generator section lacks {missing}")
    w = f"{where}: generator"
    out = dict(
        in_channels=_num(g["num_channels"], "num_channels", w), image_size=_num(latent, "image_size", w),
        nf=_num(g["num_channels_dae"], "num_channels_dae", w), ch_mult=_ints(g["ch_mult"], "ch_mult", w),
        num_res_blocks=_num(g["num_res_blocks"], "num_res_blocks", w),
        attn_resolutions=_ints(g["attn_resolutions"], "attn_resolutions", w),
        dropout=_num(g.get("dropout"), "dropout", w, float, 0.0),
        fir_kernel=_ints(g.get("fir_kernel", (1, 3, 3, 1)), "fir_kernel", w),
        skip_rescale=_bool(g.get("skip_rescale", True), "skip_rescale", w), progressive_input=pin,
        use_tanh=not _bool(g.get("not_use_tanh", False), "not_use_tanh", w),
        centered=_bool(g.get("centered", True), "centered", w),
    )
    for k in ("nz", "z_emb_dim", "n_mlp"):
        if g.get(k) is not None:
            out[k] = _num(g[k], k, w)
    known = set(_FIXED_GENERATOR_ARGS) | _IGNORED_GENERATOR_ARGS | {
        "num_channels", "num_channels_dae", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
        "fir_kernel", "skip_rescale", "progressive_input", "not_use_tanh", "centered", "image_size",
        "current_resolution", "nz", "z_emb_dim", "n_mlp"}
    unknown = sorted(set(g) - known)
    if unknown:
        warnings.warn(f"{where}: ignoring unknown generator option(s) {unknown}", stacklevel=3)
    return out


def parse_autoencoder_args(a: dict, where: str = "official config") -> AutoencoderConfig:
    if isinstance(a.get("params"), dict):  # LDM yaml form: {target, params: {embed_dim, n_embed, ddconfig}}
        a = {**a["params"], **{k: v for k, v in a.items() if k != "params"}}
    kind = a.get("kind")
    target = str(a.get("target", ""))
    if kind is None:
        if target.endswith("AutoencoderKL"):
            kind = "kl"
        elif "VQModel" in target:
            kind = "vq"
        else:
            raise ConfigError(f"{where}: autoencoder needs 'kind' ('kl' or 'vq') or a known 'target'")
    dd = a.get("ddconfig")
    if not isinstance(dd, dict):
        raise ConfigError(f"{where}: autoencoder.ddconfig (an object) is missing")
    if dd.get("attn_type", "vanilla") != "vanilla":
        raise ConfigError(f"{where}: autoencoder attn_type {dd['attn_type']!r} is not supported (only 'vanilla')")
    w = f"{where}: autoencoder"
    try:
        cfg = AutoencoderConfig(
            kind=str(kind).lower(), embed_dim=_num(a["embed_dim"], "embed_dim", w),
            z_channels=_num(dd["z_channels"], "z_channels", w), ch=_num(dd["ch"], "ch", w),
            ch_mult=_ints(dd["ch_mult"], "ch_mult", w), num_res_blocks=_num(dd["num_res_blocks"], "num_res_blocks", w),
            attn_resolutions=_ints(dd.get("attn_resolutions", ()), "attn_resolutions", w),
            dropout=_num(dd.get("dropout"), "dropout", w, float, 0.0), resolution=_num(dd["resolution"], "resolution", w),
            in_channels=_num(dd.get("in_channels", 3), "in_channels", w), out_ch=_num(dd.get("out_ch", 3), "out_ch", w),
            double_z=_bool(dd.get("double_z", kind == "kl"), "double_z", w),
            tanh_out=_bool(dd.get("tanh_out", False), "tanh_out", w),
            n_embed=None if a.get("n_embed") is None else _num(a["n_embed"], "n_embed", w),
        )
    except KeyError as e:
        raise ConfigError(f"{where}: autoencoder config lacks {e.args[0]!r}") from None
    if _bool(dd.get("use_linear_attn", False), "use_linear_attn", w):
        raise ConfigError(f"{where}: autoencoder use_linear_attn is not supported (only vanilla attention)")
    f = a.get("downsample_factor")
    if f is not None and int(f) != cfg.downsample_factor:
        raise ConfigError(f"{where}: autoencoder.downsample_factor {f} contradicts ch_mult "
                          f"{list(cfg.ch_mult)} (factor {cfg.downsample_factor})")
    return cfg


def parse_official_config(config) -> tuple[dict, AutoencoderConfig, DiffusionConfig, float, int, str]:
    """Official JSON (path or dict) -> (generator kwargs, autoencoder cfg, diffusion cfg, scale_factor,
    image_size, name)."""
    d = _read_json(config)
    where = "official config" if isinstance(config, dict) else f"official config {os.fspath(config)!r}"
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    ls = d.get("latent_shape")
    latent_size = int(ls[-1]) if isinstance(ls, (list, tuple)) and len(ls) == 3 else None
    gk = parse_generator_args(_section(d, "generator", where), where, latent_size, d.get("image_size"))
    ae = parse_autoencoder_args(_section(d, "autoencoder", where), where)
    dsec = d.get("diffusion", {})
    if not isinstance(dsec, dict):
        raise ConfigError(f"{where}: 'diffusion' must be an object")
    g = d["generator"]
    pick = lambda k, default=None: dsec.get(k, d.get(k, g.get(k, default)))  # diffusion section, top level, generator
    T = pick("num_timesteps")
    if T is None:
        raise ConfigError(f"{where}: diffusion.num_timesteps is missing")
    w = f"{where}: diffusion"
    diff = DiffusionConfig(
        num_timesteps=_num(T, "num_timesteps", w), beta_min=_num(pick("beta_min", 0.1), "beta_min", w, float),
        beta_max=_num(pick("beta_max", 20.0), "beta_max", w, float),
        schedule="geometric" if _bool(pick("use_geometric", False), "use_geometric", w) else "vp")
    sf = d.get("scale_factor", g.get("scale_factor"))
    if sf is None:
        raise ConfigError(f"{where}: scale_factor is missing")
    image_size = d.get("image_size") or gk["image_size"] * ae.downsample_factor
    return (gk, ae, diff, _num(sf, "scale_factor", where, float), _num(image_size, "image_size", where),
            str(d.get("name", "lddgan")))


# ----------------------------------------------------------------------------------------------------
# Generator key map
Transform = Callable[[torch.Tensor], torch.Tensor]
_T = lambda w: w.t().contiguous()  # NIN stores W as (in, out); nn.Linear wants (out, in)


def _resblock_pairs(src: str, dst: str, has_skip: bool):
    names = [("GroupNorm_0.style", "norm0.style"), ("Conv_0", "conv0"), ("Dense_0", "temb_proj"),
             ("GroupNorm_1.style", "norm1.style"), ("Conv_1", "conv1")] + ([("Conv_2", "skip")] if has_skip else [])
    return [(f"{src}.{a}.{p}", f"{dst}.{b}.{p}", None) for a, b in names for p in ("weight", "bias")]


def _attn_pairs(src: str, dst: str):
    out = [(f"{src}.GroupNorm_0.{p}", f"{dst}.norm.{p}", None) for p in ("weight", "bias")]
    for i, n in enumerate(("q", "k", "v", "proj")):
        out += [(f"{src}.NIN_{i}.W", f"{dst}.{n}.weight", _T), (f"{src}.NIN_{i}.b", f"{dst}.{n}.bias", None)]
    return out


def generator_key_map(cfg: GeneratorConfig) -> list[tuple[str, str, Transform | None]]:
    """(official key, our key, transform) for every generator tensor, by replaying the official
    construction order of ``all_modules`` (positional embedding, no output pyramid)."""
    pairs: list = []
    idx = iter(range(10 ** 6))
    lin = lambda dst: [(f"all_modules.{i}.{p}", f"{dst}.{p}", None) for i in [next(idx)] for p in ("weight", "bias")]
    block = lambda dst, skip: _resblock_pairs(f"all_modules.{next(idx)}", dst, skip)
    attn = lambda dst: _attn_pairs(f"all_modules.{next(idx)}", dst)
    res = cfg.resolutions
    pairs += lin("t_embed.fc0") + lin("t_embed.fc1") + lin("conv_in")
    ch, skips = cfg.nf, [cfg.nf]
    for lvl, r in enumerate(res):
        for b in range(cfg.num_res_blocks):
            out = cfg.nf * cfg.ch_mult[lvl]
            pairs += block(f"enc.{r}x{r}_block{b}", ch != out)
            ch = out
            if r in cfg.attn_resolutions:
                pairs += attn(f"enc.{r}x{r}_attn{b}")
            skips.append(ch)
        if lvl != len(res) - 1:
            pairs += block(f"enc.{r}x{r}_down", True)
            if cfg.progressive_input == "residual":
                i = next(idx)
                pairs += [(f"all_modules.{i}.Conv2d_0.{p}", f"enc.{r // 2}x{r // 2}_pyramid.{p}", None)
                          for p in ("weight", "bias")]
            skips.append(ch)
    pairs += block("mid.block0", False) + attn("mid.attn") + block("mid.block1", False)
    for lvl in reversed(range(len(res))):
        r = res[lvl]
        for b in range(cfg.num_res_blocks + 1):
            out = cfg.nf * cfg.ch_mult[lvl]
            pairs += block(f"dec.{r}x{r}_block{b}", ch + skips.pop() != out)
            ch = out
        if r in cfg.attn_resolutions:
            pairs += attn(f"dec.{r}x{r}_attn")
        if lvl != 0:
            pairs += block(f"dec.{r}x{r}_up", True)
    pairs += lin("norm_out") + lin("conv_out")
    for j in range(cfg.n_mlp + 1):
        pairs += [(f"z_transform.{2 * j + 1}.{p}", f"z_mapping.fc.{j}.{p}", None) for p in ("weight", "bias")]
    return pairs


def strip_ddp_prefix(sd: dict) -> dict:
    """Remove DDP's ``module.`` prefix when every key has it (an explicit rule, not blind slicing)."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def infer_z_mapping(sd: dict) -> dict:
    """nz, z_emb_dim and n_mlp from the ``z_transform`` Linear layers of an official generator state dict."""
    idx = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"z_transform\.(\d+)\.weight", k)))
    if not idx:
        raise CheckpointError("no z_transform.* weights found: this is not an official LDDGAN/DDGAN generator")
    w0 = sd[f"z_transform.{idx[0]}.weight"]
    return {"nz": int(w0.shape[1]), "z_emb_dim": int(w0.shape[0]), "n_mlp": len(idx) - 1}


def _tensor_dict(obj, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{what}: entries that are not tensors: {bad[:10]}")
    return obj


def map_state_dict(src: dict, pairs, target: dict, what: str) -> dict:
    """Apply (src key, dst key, transform) pairs with strict checks against the target state dict."""
    used, out, bad_shape = set(), {}, []
    for sk, dk, fn in pairs:
        if sk not in src:
            continue
        v = src[sk]
        v = fn(v) if fn is not None else v
        used.add(sk)
        if dk in target and tuple(target[dk].shape) != tuple(v.shape):
            bad_shape.append(f"{sk}: file {tuple(v.shape)} vs config {tuple(target[dk].shape)}")
        out[dk] = v
    missing = sorted(sk for sk, dk, _ in pairs if sk not in src)
    unexpected = sorted(set(src) - used)
    problems = []
    if bad_shape:
        problems.append(f"shape mismatches ({len(bad_shape)}): {bad_shape[:20]}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    if problems:
        raise CheckpointError(f"{what} does not match the configured architecture: " + "; ".join(problems))
    assert set(out) == set(target), "key map does not cover the module"  # a bug in the map, not the file
    return out


def extract_autoencoder_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """Lightning ckpt / LatentDiffusion ckpt / bare state dict -> autoencoder tensors (LDM names)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what}: no state dict found (got {type(obj).__name__})")
    if any(k.startswith("first_stage_model.") for k in obj):
        obj = {k[len("first_stage_model."):]: v for k, v in obj.items() if k.startswith("first_stage_model.")}
    obj = strip_ddp_prefix(obj)
    kept = {k: v for k, v in obj.items() if not _AE_DROP.match(k)}
    return _tensor_dict(kept, what)


def _check_generator_file(sd: dict, what: str):
    if not any(k.startswith("all_modules.") for k in sd):
        hint = " (it looks like an autoencoder checkpoint)" if any(
            k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in sd) else ""
        if any(k.startswith("generator.") for k in sd) and any(k.startswith("autoencoder.") for k in sd):
            hint = " (it looks like an LDDGAN model file already converted: open it with lddgan_core.load())"
        raise CheckpointError(f"{what}: no 'all_modules.*' keys: not an official LDDGAN generator{hint}")


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _provenance(config, generator, autoencoder) -> dict:
    """Where the weights came from: file names and sha256 of the official files, library version."""

    out = {"source": "official", "converter": f"lddgan_core {__version__}"}
    for key, src in (("generator", generator), ("autoencoder", autoencoder)):
        if not isinstance(src, dict):
            out[key] = os.path.basename(os.fspath(src))
            out[f"{key}_sha256"] = _sha256(src)
    if not isinstance(config, dict):
        out["config"] = os.path.basename(os.fspath(config))
    d = _read_json(config)
    if isinstance(d, dict) and d.get("official_commit"):
        out["official_commit"] = str(d["official_commit"])
    return out


# A checkpoint may hold more than the weights (EMA copies, optimizer states, a Lightning loss network): its
# tensors may take this many times the weights' float32 size, plus FILE_BUDGET_SLACK bytes, and no more.
FILE_BUDGET_FACTOR = 8
FILE_BUDGET_SLACK = 512 << 20


def _file_budget(gk: dict, ae_cfg, part: str, shapes: dict | None = None) -> int:
    """Bytes a generator / autoencoder checkpoint may allocate, from what the config implies (the generator's
    z-mapping sizes are read from the file itself, so the official defaults stand in for them here)."""
    if shapes is None:
        try:
            gcfg = GeneratorConfig(**{"nz": 100, "z_emb_dim": 256, "n_mlp": 3, **gk})
        except (ConfigError, TypeError):
            return FILE_BUDGET_SLACK  # the config is reported properly below; read only a small file meanwhile
        with torch.device("meta"):
            shapes = {"generator." + k: tuple(v.shape) for k, v in Generator(gcfg).state_dict().items()}
    n = sum(math.prod(s) for k, s in shapes.items() if k.startswith(part + "."))
    return FILE_BUDGET_FACTOR * 4 * n + FILE_BUDGET_SLACK


def load_official(config, generator, autoencoder, *, device="cpu", dtype=torch.float32, name: str | None = None):
    """Build an LDDGAN from the official files: ``config`` (JSON path or dict), ``generator`` (netG_*.pth)
    and ``autoencoder`` (LDM .ckpt, or a state dict file). Paths may also be already-loaded dicts."""

    gk, ae_cfg, diff, sf, image_size, cfg_name = parse_official_config(config)
    gwhat = f"generator file {os.fspath(generator)!r}" if not isinstance(generator, dict) else "generator state dict"
    awhat = f"autoencoder file {os.fspath(autoencoder)!r}" if not isinstance(autoencoder, dict) else "autoencoder state dict"
    gsd = generator if isinstance(generator, dict) else read_state_dict(
        generator, what="generator", max_bytes=_file_budget(gk, ae_cfg, "generator"))
    if isinstance(gsd, dict) and isinstance(gsd.get("state_dict"), dict):
        gsd = gsd["state_dict"]
    gsd = strip_ddp_prefix(_tensor_dict(gsd, gwhat))
    _check_generator_file(gsd, gwhat)
    inferred = infer_z_mapping(gsd)
    for k, v in inferred.items():
        if k in gk and gk[k] != v:
            raise CheckpointError(f"{gwhat}: the config says {k}={gk[k]} but the checkpoint's z_transform has {k}={v}; "
                                  f"fix the config or remove {k!r} from it to use the checkpoint's value")
        gk.setdefault(k, v)
    try:
        gcfg = GeneratorConfig(**gk)
        mcfg = ModelConfig(generator=gcfg, autoencoder=ae_cfg, diffusion=diff, scale_factor=sf, image_size=image_size,
                           name=name or cfg_name,
                           provenance=_provenance(config, generator, autoencoder))
    except ConfigError as e:  # name the config the contradiction came from
        where = "official config" if isinstance(config, dict) else f"official config {os.fspath(config)!r}"
        raise ConfigError(f"{where}: {e}") from None
    # Shapes are checked against the architecture built on the meta device (nothing allocated) before the model
    # is built: a config asking for far more than the files hold fails here, cheaply.
    shapes = expected_shapes(mcfg)
    meta_target = lambda prefix: {k[len(prefix):]: torch.empty(v, device="meta")  # noqa: E731
                                  for k, v in shapes.items() if k.startswith(prefix)}
    g_target = meta_target("generator.")
    g_sd = map_state_dict(gsd, generator_key_map(gcfg), g_target, gwhat)
    check_finite_weights(g_sd, gwhat)

    asd_raw = autoencoder if isinstance(autoencoder, dict) else read_state_dict(
        autoencoder, what="autoencoder", max_bytes=_file_budget(gk, ae_cfg, "autoencoder", shapes))
    asd = extract_autoencoder_state_dict(asd_raw, awhat)
    if any(k.startswith("all_modules.") or k.startswith("z_transform.") for k in asd):
        raise CheckpointError(f"{awhat}: holds generator keys (all_modules.*): were generator and autoencoder swapped?")
    a_target = meta_target("autoencoder.")
    a_sd = map_state_dict(asd, [(k, k, None) for k in a_target], a_target, awhat)
    check_finite_weights(a_sd, awhat)
    model = LDDGAN(mcfg)

    model.generator.load_state_dict(g_sd, strict=True)
    model.autoencoder.load_state_dict(a_sd, strict=True)
    return model.to(device=device, dtype=dtype).eval()
