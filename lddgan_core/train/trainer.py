"""The LDDGAN trainer: a time-conditioned GAN in the latent space of a frozen autoencoder with Weighted
Learning (DDGAN, Xiao et al. 2022, Alg. 1; LDDGAN, Trinh & Hamagami 2024, Eq. 9).

One iteration (official train_ldgan.py order):
  D step  real pairs (x_t, t, x_{t+1}) ~ q: softplus(-D) (+ lazy R1 on x_t every lazy_reg steps);
          fakes x'_t ~ q(x_t | x_{t+1}, G(x_{t+1}, t, z)): softplus(D); Adam step of D.
  G step  fresh t, pairs and z: softplus(-D(x'_t, t, x_{t+1})) + w(progress) L1(G(x_{t+1}, t, z), x_0);
          Adam step of G, then the EMA of G.

Randomness: every draw of iteration s (data order, t, q noises, z, posterior noises, KL posterior samples,
dropout) comes from generators seeded with (seed, s) and is drawn on the CPU for the whole global batch;
each process / micro-batch uses its rows. A run therefore does not depend on the device, a resumed run equals
an uninterrupted one, and N processes equal one process with the same global batch and micro-batch.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os

import torch

from ..atomic import atomic_write
from ..config import ModelConfig
from ..diffusion.sampler import NoiseSource, sample_loop
from ..diffusion.schedule import posterior_sample, q_sample_pairs
from ..errors import CheckpointError, ConfigError
from ..formats.safe_load import read_safetensors
from ..limits import check_latent
from ..model import LDDGAN
from ..nets.discriminator import build_discriminator, DiscriminatorConfig, stddev_group_size
from ..nets.ops import NetImpl
from . import dist as tdist
from . import diffaug
from .config import parse_rec_t_rule, default_discriminator, resolve_image_d_weight, TrainConfig
from .files import DISC_FORMAT, LOG_COLUMNS, save_discriminator
from .latents import LatentSet
from .losses import d_fake_loss, d_real_loss, g_adv_loss, r1_penalty, rec_loss
from .schedules import lr_at, progress_of, rec_weight

STATE_FORMAT = "lddgan-train"
STATE_VERSION = 1
_MASK = (1 << 63) - 1
_SALT_DATA, _SALT_STEP, _SALT_DROPOUT, _SALT_INIT = 0x5EED_DA7A, 0x5EED_57E9, 0x5EED_D209, 0x5EED_1417
_SALT_AUG = 0x5EED_A06E
_SALT_DEXTRA = 0x5EED_DE87  # TrainConfig.d_steps > 1: the extra D steps' draws
_SALT_IMG_AUG = 0x5EED_1A06  # TrainConfig.image_d_weight > 0 with augmentation: the image D's augmentation draws
# TrainConfig.fast: FIR resampling as strided / transposed convs and SDPA attention in G and D; the fused
# no-grad block bodies never run in training (they need eval mode without grad)
TRAIN_FAST_IMPL = NetImpl(fir_conv=True, sdpa=True)


def mix_seed(seed: int, index: int, salt: int) -> int:
    """A 63-bit seed for (seed, index, salt): distinct streams for data order, noises and dropout."""
    x = (seed * 6364136223846793005 + index * 1442695040888963407 + salt * 2862933555777941757) & _MASK
    x ^= x >> 29
    return (x * 0xBF58476D1CE4E5B9) & _MASK


def new_reference_model(model_config, seed: int, device) -> LDDGAN:
    """A new LDDGAN whose random init comes from `seed` without touching the caller's global RNG, on the
    reference (non-fast) path so that gradients flow through the tested reference ops."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(seed, 0, _SALT_INIT))
        m = LDDGAN(model_config, fast=False)
    return m.to(device)


def clone_model(model: LDDGAN, device, seed: int = 0) -> LDDGAN:
    """A float32 copy of `model` (a new object sharing no storage with it) on `device`."""
    m = new_reference_model(model.config, seed, "cpu")
    with torch.no_grad():
        for dst, src in ((m.generator, model.generator), (m.autoencoder, model.autoencoder)):
            dst.load_state_dict({k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
                                 for k, v in src.state_dict().items()}, strict=True)
    return m.to(device)


def stddev_group_order(batch: int, chunk: int) -> torch.Tensor | None:
    """A row order for the global batch such that every chunk of `chunk` consecutive rows (a micro-batch or a
    process's share) holds whole minibatch-stddev groups of the full batch, laid out so that D's grouping of the
    chunk (sample b with b' = b mod (chunk/G)) forms exactly those groups. Then D's outputs, and so the whole
    step, do not depend on how the batch is split. None when no reordering is needed (one chunk) or possible
    (the chunk's group size differs from the batch's; the split then changes the groups, as documented)."""
    if chunk >= batch:
        return None
    G = stddev_group_size(batch)
    if chunk % G or stddev_group_size(chunk) != G:
        return None
    per_batch, per_chunk = batch // G, chunk // G  # groups in the batch / in a chunk
    order = torch.empty(batch, dtype=torch.long)
    for k in range(batch // chunk):
        for j in range(per_chunk):
            for i in range(G):
                order[k * chunk + j + i * per_chunk] = k * per_chunk + j + i * per_batch
    return order


def rec_t_factors(spec, coefficients, T: int) -> torch.Tensor | None:
    """TrainConfig.rec_t_weights as a [T] tensor of L1 factors (None: the official uniform L1). Rules use SNR(x_{t+1})
    = alpha_bar / (1 - alpha_bar) of the model's schedule (T = 4 shapes and emoji: 1.09, 0.085, 0.0034, 4e-5):
    "min_snr": min(1, SNR); "snr>=X": 1 where SNR >= X, else 0."""
    if spec is None:
        return None
    rule = parse_rec_t_rule(spec)
    if rule is not None:
        a, s = coefficients.a_s_cum[1:T + 1].double(), coefficients.sigmas_cum[1:T + 1].double()
        snr = a ** 2 / s ** 2
        return (snr.clamp(max=1.0) if rule[0] == "min_snr" else (snr >= rule[1]).double()).float()
    if len(spec) != T:
        raise ConfigError(f"rec_t_weights: expected one factor per diffusion step ({T} for this model, t = 0 .. "
                          f"{T - 1}), got {len(spec)}: {list(spec)}")
    return torch.tensor(spec, dtype=torch.float32)


class GANTrainer:
    """G (trained), its EMA, D, both Adam optimizers and the frozen autoencoder of one LDDGAN.

    model: the starting point; it is copied, never modified. data: latents of the training images (autoencoder
    space). discriminator: None (fresh, initialised from the seed), a DiscriminatorConfig / dict, or a state
    dict to start from (with disc_config). device: where to train. world: the torchrun process group.
    """

    def __init__(self, model: LDDGAN, data: LatentSet, cfg: TrainConfig, *, disc_config=None,
                 discriminator_state: dict | None = None, device="cpu", world: tdist.World | None = None):
        self.cfg, self.world = cfg, world or tdist.World()
        self.device = torch.device(device)
        self.data = data
        C = model.latent_shape[0]
        check_latent(data.mean, model.latent_shape, "training latents", exact=True)
        self.local_batch, self.micro = tdist.split_batch(cfg.batch_size, cfg.micro_batch, self.world)
        self.model = clone_model(model, self.device, cfg.seed)
        self.model.autoencoder.requires_grad_(False).eval()
        self.G = self.model.generator.train()
        if cfg.fast:  # the op forms whose gradients equal the reference's (tests/tools/test_train_bench.py)
            self.G.set_impl(TRAIN_FAST_IMPL)
        self.ema = copy.deepcopy(self.G).requires_grad_(False).eval()
        if isinstance(disc_config, DiscriminatorConfig):
            disc_config = disc_config.to_dict()
        self.disc_config = DiscriminatorConfig.from_dict(disc_config or default_discriminator(model.latent_shape))
        if self.disc_config.in_channels != 2 * C:
            raise ConfigError(f"discriminator in_channels {self.disc_config.in_channels} must be 2 x latent channels "
                              f"({2 * C})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(cfg.seed, 1, _SALT_INIT))
            self.D = build_discriminator(self.disc_config, TRAIN_FAST_IMPL if cfg.fast else NetImpl())
        if discriminator_state is not None:
            self.D.load_state_dict(discriminator_state, strict=True)
        self.D.to(self.device).train()
        for net in (self.G, self.ema, self.D):
            tdist.broadcast_module(net, self.world)
        betas = (cfg.beta1, cfg.beta2)
        # fast: one fused kernel per optimizer (CPU and CUDA); else foreach (one update over all tensors, op by op;
        # PyTorch only defaults to it on CUDA). The same arithmetic
        kind = {"fused": True} if cfg.fast else {"foreach": True}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas, **kind)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas, **kind)
        # the optional image discriminator (TrainConfig.image_d_weight): a PatchGAN on decoded x0
        self.Di, self.opt_di = None, None
        self.image_d_weight = resolve_image_d_weight(cfg.image_d_weight, model.config.image_size)
        if self.image_d_weight > 0:
            from .autoencoder import PatchDiscriminator  # (autoencoder.py imports this module)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seed(cfg.seed, 2, _SALT_INIT))
                self.Di = PatchDiscriminator(3, cfg.image_d_ndf, n_layers=2)
            self.Di.to(self.device).train()
            tdist.broadcast_module(self.Di, self.world)
            self.opt_di = torch.optim.Adam(self.Di.parameters(), lr=cfg.lr_d, betas=betas, **kind)
            self.log_columns = LOG_COLUMNS + ("di_real", "di_fake", "gi_adv")
        self.step = 0  # iterations done
        self.history: list[dict] = []  # loss-log rows
        # differentiable augmentation of D's inputs (off for the official recipe)
        self.aug_ops = diffaug.parse_policy(cfg.d_augment)
        self.ada = diffaug.AdaptiveP(cfg.augment_p, cfg.ada_target if self.aug_ops else 0.0, cfg.ada_kimg,
                                     cfg.ada_interval)
        # the colour op's unit: the data's spread in diffusion space
        self.aug_spread = float(data.mean.std()) / self.model.scale_factor if self.aug_ops else 1.0
        self._order = stddev_group_order(cfg.batch_size, self.micro)
        tw = rec_t_factors(cfg.rec_t_weights, self.model.coefficients, self.model.num_timesteps)
        self._rec_tw = None if tw is None else tw.to(self.device)  # indexed by t on the device: no host sync
        self._perms: dict[int, torch.Tensor] = {}
        self.data_fingerprint = data.fingerprint

    # -- randomness --------------------------------------------------------------------------------------
    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, epoch, _SALT_DATA))
            self._perms[epoch] = torch.randperm(len(self.data), generator=g)
        return self._perms[epoch]

    def batch_indices(self, step: int) -> torch.Tensor:
        """Dataset rows of iteration `step`: positions step*B .. step*B+B-1 of the endless stream of per-epoch
        permutations (so datasets smaller than the batch work, and any step is computable on its own)."""
        N, B = len(self.data), self.cfg.batch_size
        pos = torch.arange(step * B, step * B + B)
        return torch.stack([self._perm(int(p) // N)[int(p) % N] for p in pos])

    def draws(self, step: int, extra: int = 0) -> dict[str, torch.Tensor]:
        """All noises of iteration `step` for the global batch, in a fixed order, on the CPU. extra = k >= 1: the
        draws of the k-th extra D step (TrainConfig.d_steps), from their own stream (data rows included)."""
        B, (C, h, w) = self.cfg.batch_size, self.model.latent_shape
        T, nz = self.model.num_timesteps, self.model.config.generator.nz
        if extra:
            g = torch.Generator().manual_seed(mix_seed(mix_seed(self.cfg.seed, step, _SALT_DEXTRA), extra, _SALT_STEP))
            d = {"index": torch.randint(len(self.data), (B,), generator=g)}
        else:
            g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, _SALT_STEP))
            d = {"index": self.batch_indices(step)}
        kl_sample = self.cfg.latent_mode == "sample" and self.data.std is not None
        d["eps"] = torch.randn(B, C, h, w, generator=g) if kl_sample else None
        for phase in ("d", "g"):
            d[f"t_{phase}"] = torch.randint(0, T, (B,), generator=g)
            d[f"q1_{phase}"] = torch.randn(B, C, h, w, generator=g)
            d[f"q2_{phase}"] = torch.randn(B, C, h, w, generator=g)
            d[f"z_{phase}"] = torch.randn(B, nz, generator=g)
            d[f"post_{phase}"] = torch.randn(B, C, h, w, generator=g)
        if self.aug_ops:  # its own stream: the draws above are the same with augmentation on or off
            ga = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, _SALT_AUG) ^ extra)
            for k in ("aug_real", "aug_fake", "aug_g"):
                d[k] = diffaug.draw_params(self.aug_ops, self.ada.p, B, (h, w), ga)
            if self.Di is not None and not extra:  # the image D's, at image size, from a stream of their own
                f = self.model.autoencoder.cfg.downsample_factor
                gi = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, _SALT_IMG_AUG))
                for k in ("augi_real", "augi_fake", "augi_g"):
                    d[k] = diffaug.draw_params(self.aug_ops, self.ada.p, B, (h * f, w * f), gi)
        return d

    # -- one iteration -----------------------------------------------------------------------------------
    def _autocast(self):
        p = self.cfg.precision
        if p == "bf16" or (p == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _chunks(self, d: dict):
        """Yield (x0, rows-of-d) for this process's micro-batches; x0 = latent / scale_factor on the device.
        Rows are first put in stddev_group_order, so the split does not change D's minibatch-stddev groups."""
        if self._order is not None:
            d = {k: (None if v is None else diffaug.take_params(v, self._order) if isinstance(v, dict)
                     else v[self._order]) for k, v in d.items()}
        start = self.world.rank * self.local_batch
        for j in range(start, start + self.local_batch, self.micro):
            rows = {k: (None if v is None else diffaug.take_params(v, slice(j, j + self.micro))
                        if isinstance(v, dict) else v[j:j + self.micro]) for k, v in d.items()}
            x0 = self.data.draw(rows["index"], rows["eps"]) / self.model.scale_factor
            yield x0.to(self.device), {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in rows.items()}

    def _D(self, x_t, t, x_tp1, aug):
        """D on a pair, through the pair's augmentation (rows of draw_params) when augmentation is on."""
        if aug is not None:
            x_t, x_tp1 = diffaug.apply_pair(x_t, x_tp1, aug, self.aug_spread)
        with self._autocast():
            return self.D(x_t, t, x_tp1)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images of diffusion-space latents x0, through the frozen decoder (differentiable in x0)."""
        with self._autocast():
            return self.model.autoencoder.decode(x0 * self.model.scale_factor).float()

    def _Di(self, img, aug):
        if aug is not None:
            img = diffaug.apply(img, aug, 1.0)  # images in [-1, 1]: the colour op's unit is 1
        with self._autocast():
            return self.Di(img)

    def d_step(self, d: dict, do_r1: bool, image: bool = False) -> dict[str, float]:
        """Accumulate D's gradients over the micro-batches: real pairs (+ R1), then posterior fakes. image: also the
        image D's (decoded real x0 (+ R1) against decoded x0 predictions)."""
        frac = self.micro / self.local_batch
        logs = {"d_real": 0.0, "d_fake": 0.0}
        if do_r1:
            logs["r1"] = 0.0
        image = image and self.Di is not None
        if image:
            logs.update(di_real=0.0, di_fake=0.0)
            self.Di.requires_grad_(True)
        self.D.requires_grad_(True)
        for x0, r in self._chunks(d):
            t = r["t_d"]
            x_t, x_tp1 = q_sample_pairs(self.model.coefficients, x0, t, r["q1_d"], r["q2_d"])
            x_t = x_t.detach().requires_grad_(True)
            real = self._D(x_t, t, x_tp1, r.get("aug_real"))
            self.ada.observe(real)
            loss = d_real_loss(real)
            logs["d_real"] += frac * loss.detach()
            if do_r1:  # R1 on the un-augmented real x_t (the augmentation is part of D, as in StyleGAN2-ADA)
                r1 = r1_penalty(real, x_t, self.cfg.r1_gamma)
                logs["r1"] += frac * r1.detach()
                loss = loss + r1
            (frac * loss).backward()
            with torch.no_grad(), self._autocast():
                x0_pred = self.G(x_tp1, t, r["z_d"]).float()
            x_pos = posterior_sample(self.model.posterior, x0_pred, x_tp1, t, r["post_d"])
            fake = self._D(x_pos, t, x_tp1, r.get("aug_fake"))
            loss = d_fake_loss(fake)
            logs["d_fake"] += frac * loss.detach()
            (frac * loss).backward()
            if image:
                with torch.no_grad():
                    img_real, img_fake = self._decode(x0), self._decode(x0_pred)
                img_real.requires_grad_(do_r1)
                real = self._Di(img_real, r.get("augi_real"))
                loss = d_real_loss(real)
                logs["di_real"] += frac * loss.detach()
                if do_r1:
                    loss = loss + r1_penalty(real, img_real, self.cfg.r1_gamma)
                fake_i = d_fake_loss(self._Di(img_fake, r.get("augi_fake")))
                logs["di_fake"] += frac * fake_i.detach()
                (frac * (loss + fake_i)).backward()
        return logs

    def g_step(self, d: dict, w: float, backward: bool = True) -> dict[str, float]:
        """Accumulate G's gradients: non-saturating adversarial loss + w * L1(x0_pred, x0) (backward=False: the
        losses only; call it under no_grad)."""
        frac = self.micro / self.local_batch
        logs = {"g_adv": 0.0, "rec": 0.0}
        self.D.requires_grad_(False)
        if self.Di is not None:
            logs["gi_adv"] = 0.0
            self.Di.requires_grad_(False)
        for x0, r in self._chunks(d):
            t = r["t_g"]
            x_t, x_tp1 = q_sample_pairs(self.model.coefficients, x0, t, r["q1_g"], r["q2_g"])
            with self._autocast():
                x0_pred = self.G(x_tp1, t, r["z_g"]).float()
            x_pos = posterior_sample(self.model.posterior, x0_pred, x_tp1, t, r["post_g"])
            fake = self._D(x_pos, t, x_tp1, r.get("aug_g"))
            adv = g_adv_loss(fake)
            rec = rec_loss(x0_pred, x0, None if self._rec_tw is None else self._rec_tw[t])
            logs["g_adv"] += frac * adv.detach()
            logs["rec"] += frac * rec.detach()
            loss = adv + w * rec if w else adv
            if self.Di is not None:
                adv_i = g_adv_loss(self._Di(self._decode(x0_pred), r.get("augi_g")))
                logs["gi_adv"] += frac * adv_i.detach()
                loss = loss + self.image_d_weight * adv_i
            if backward:
                (frac * loss).backward()
        self.D.requires_grad_(True)
        if self.Di is not None:
            self.Di.requires_grad_(True)
        return logs

    def ema_decay_at(self, step: int) -> float:
        d = self.cfg.ema_decay
        return min(d, (1.0 + step) / (10.0 + step)) if self.cfg.ema_warmup else d

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * G, after every G step. Ours starts from G's initial weights (a copy
        made when the trainer is built); the official EMA creates its copy after the first optimizer step, from
        the updated G. The two differ by decay^s * decay * (G_0 - G_1) after s steps: a start-up difference that
        fades (ema_warmup makes the first steps' decay small, which removes it in practice)."""
        ema, cur = list(self.ema.parameters()), [p.detach() for p in self.G.parameters()]
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, cur, alpha=1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.G.buffers()):
            e.copy_(b)

    def train_step(self) -> dict[str, float]:
        """Run iteration `self.step`; returns its losses (averaged over processes)."""
        cfg, s = self.cfg, self.step
        p = progress_of(s, cfg.schedule_steps or cfg.steps)
        w = rec_weight(p, cfg.rec_schedule, cfg.gamma, cfg.rec_value)
        lr_g, lr_d = (lr_at(p, lr, cfg.lr_schedule, cfg.min_lr) for lr in (cfg.lr_g, cfg.lr_d))
        for opt, lr in ((self.opt_g, lr_g), (self.opt_d, lr_d), (self.opt_di, lr_d)):
            if opt is None:
                continue
            for group in opt.param_groups:
                group["lr"] = lr
        d = self.draws(s)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # dropout, seeded per iteration
            torch.manual_seed(mix_seed(cfg.seed, s, _SALT_DROPOUT))
            logs: dict = {}
            for k in range(cfg.d_steps):  # k = 0: this iteration's draws (and lazy R1), logged; then the extra ones
                self.opt_d.zero_grad(set_to_none=True)
                if k == 0 and self.opt_di is not None:
                    self.opt_di.zero_grad(set_to_none=True)
                logs_k = self.d_step(self.draws(s, extra=k) if k else d,
                                     do_r1=(k == 0 and s % cfg.lazy_reg == 0 and cfg.r1_gamma > 0), image=k == 0)
                logs = logs or logs_k
                tdist.average_gradients(self.D.parameters(), self.world)
                self.opt_d.step()
                if k == 0 and self.opt_di is not None:  # the image D: once per iteration
                    tdist.average_gradients(self.Di.parameters(), self.world)
                    self.opt_di.step()
            self.opt_g.zero_grad(set_to_none=True)
            if s < cfg.d_warmup:  # D only: G's losses measured, G and the EMA untouched
                with torch.no_grad():
                    logs.update(self.g_step(d, w, backward=False))
            else:
                logs.update(self.g_step(d, w))
                tdist.average_gradients(self.G.parameters(), self.world)
                self.opt_g.step()
        if s >= cfg.d_warmup:
            self.update_ema(self.ema_decay_at(s - cfg.d_warmup))
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_di is not None:
            self.opt_di.zero_grad(set_to_none=True)
        # the losses were accumulated as tensors: one host sync per iteration
        vals = torch.stack([v.float() if torch.is_tensor(v) else torch.tensor(float(v)) for v in logs.values()])
        logs = dict(zip(logs, vals.tolist()))
        if self.aug_ops:
            if self.world.size > 1 and self.ada.target > 0:  # every process must see the same p
                tot = tdist.average_scalars({"s": self.ada._sum, "n": float(self.ada._n)}, self.world, self.device)
                self.ada._sum, self.ada._n = tot["s"] * self.world.size, round(tot["n"] * self.world.size)
            self.ada.update(s, cfg.batch_size)
        logs = tdist.average_scalars(logs, self.world, self.device)
        logs.update(step=s + 1, w=w, lr_g=lr_g, lr_d=lr_d, d_loss=logs["d_real"] + logs["d_fake"],
                    g_loss=logs["g_adv"] + w * logs["rec"] + self.image_d_weight * logs.get("gi_adv", 0.0))
        if self.aug_ops:
            logs["aug_p"] = self.ada.p
        self.step = s + 1
        return logs

    # -- evaluation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def d_margins(self, n: int = 256, seed: int = 999) -> dict[str, list[float]]:
        """Per step t: [mean D(real pair), mean D(generated pair), mean |x0_pred - x0|] on n training latents with
        fixed draws (t = i mod T), G and D as they are now. A D whose real and generated logits coincide at
        every t has nothing to teach G (README "Recipe probes")."""
        T, (C, h, w), nz = self.model.num_timesteps, self.model.latent_shape, self.model.config.generator.nz
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self.data), generator=g)[:n]
        n = len(idx)
        t = torch.arange(n) % T
        q1, q2, z, post = (torch.randn(n, C, h, w, generator=g), torch.randn(n, C, h, w, generator=g),
                           torch.randn(n, nz, generator=g), torch.randn(n, C, h, w, generator=g))
        x0 = (self.data.draw(idx, None) / self.model.scale_factor).to(self.device)
        t, q1, q2, z, post = (v.to(self.device) for v in (t, q1, q2, z, post))
        x_t, x_tp1 = q_sample_pairs(self.model.coefficients, x0, t, q1, q2)
        pred = self.G(x_tp1, t, z).float()
        fake = posterior_sample(self.model.posterior, pred, x_tp1, t, post)
        real_l, fake_l = self.D(x_t, t, x_tp1).flatten().cpu(), self.D(fake, t, x_tp1).flatten().cpu()
        l1 = (pred - x0).abs().flatten(1).mean(1).cpu()
        t = t.cpu()
        return {f"t{k}": [round(float(v[t == k].mean()), 3) for v in (real_l, fake_l, l1)]
                for k in range(T) if (t == k).any()}

    @torch.no_grad()
    def reconstruction_l1(self, n: int | None = None, seed: int = 12345, use_ema: bool = False,
                          t: int | None = None) -> float:
        """Mean |G(x_{t+1}, t, z) - x0| over the first n training latents (mean latents; t, noises and z fixed by
        `seed`, or every sample at step `t`): the quantity the L1 term trains, for measuring learning."""
        lat = self.data.mean[: n or len(self.data)] / self.model.scale_factor
        B, (C, h, w) = lat.shape[0], self.model.latent_shape
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.model.num_timesteps, (B,), generator=g) if t is None else torch.full((B,), int(t))
        q1, q2 = torch.randn(B, C, h, w, generator=g), torch.randn(B, C, h, w, generator=g)
        z = torch.randn(B, self.model.config.generator.nz, generator=g)
        net = self.ema if use_ema else self.G
        was = net.training
        net.eval()
        try:
            x0, t, q1, q2, z = (v.to(self.device) for v in (lat, t, q1, q2, z))
            _, x_tp1 = q_sample_pairs(self.model.coefficients, x0, t, q1, q2)
            return float((net(x_tp1, t, z).float() - x0).abs().mean())
        finally:
            net.train(was)

    @torch.no_grad()
    def sample_images(self, seeds, use_ema: bool = True) -> torch.Tensor:
        """Images [n, 3, H, W] in [-1, 1] from the EMA generator (as LDDGAN.sample(seeds=...) + decode)."""
        C, h, w = self.model.latent_shape
        T = self.model.num_timesteps
        src = NoiseSource.from_seeds(list(seeds), (C, h, w), self.model.config.generator.nz, T)
        net = self.ema if use_ema else self.G
        was = net.training
        net.eval()
        try:
            x, _, _ = sample_loop(net, self.model.posterior, src.initial().float().to(self.device), src, T)
            return self.model.autoencoder.decode(x * self.model.scale_factor).float().clamp(-1, 1).cpu()
        finally:
            net.train(was)

    log_columns = LOG_COLUMNS
    curve_keys = ("d_loss", "g_adv", "rec", "w")

    def synced_modules(self):
        return (self.G, self.ema, self.D) + (() if self.Di is None else (self.Di,))

    def finish(self, paths, provenance: dict | None = None):
        """Export the trained model (EMA generator) and write paths.model / paths.discriminator."""

        model, files = self.export_model(provenance=provenance), {}
        if paths.model:
            files["model"] = model.save(paths.model)
        if paths.discriminator:
            files["discriminator"] = save_discriminator(self.D, paths.discriminator)
        return model, files

    def export_model(self, use_ema: bool = True, provenance: dict | None = None) -> LDDGAN:
        """A new LDDGAN (CPU, float32, eval) with the EMA (or raw) generator and the frozen autoencoder."""
        cfg = self.model.config
        if provenance is not None:
            cfg = dataclasses.replace(cfg, provenance=provenance)
        m = new_reference_model(cfg, self.cfg.seed, "cpu").set_fast(True)
        with torch.no_grad():
            m.generator.load_state_dict({k: v.detach().cpu() for k, v in (self.ema if use_ema else self.G)
                                         .state_dict().items()})
            m.autoencoder.load_state_dict({k: v.detach().cpu() for k, v in self.model.autoencoder.state_dict().items()})
        return m.eval()

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        return {
            "format": STATE_FORMAT, "format_version": STATE_VERSION, "kind": "gan",
            "step": self.step,
            "train_config": self.cfg.to_json(),
            "model_config": self.model.config.to_json(),
            "disc_config": json.dumps(self.disc_config.to_dict(), sort_keys=True),
            "data_fingerprint": self.data_fingerprint,
            "generator": cpu(self.G.state_dict()), "ema": cpu(self.ema.state_dict()),
            "discriminator": cpu(self.D.state_dict()), "autoencoder": cpu(self.model.autoencoder.state_dict()),
            "opt_g": _opt_to_cpu(self.opt_g.state_dict()), "opt_d": _opt_to_cpu(self.opt_d.state_dict()),
            # every random draw is a function of (seed, step): this is the complete RNG state
            "rng": {"seed": self.cfg.seed, "step": self.step},
            "augment": self.ada.state_dict(),
            "history": [dict(r) for r in self.history],
            **({} if self.Di is None else {"image_discriminator": cpu(self.Di.state_dict()),
                                           "opt_image_d": _opt_to_cpu(self.opt_di.state_dict())}),
        }

    def load_state_dict(self, state: dict, where: str = "training state") -> None:
        """Continue from `state` (written by state_dict). The model architecture, discriminator, data and
        training hyper-parameters must match (steps and logging intervals may differ)."""
        check_state(state, where)

        if ModelConfig.from_dict(json.loads(state["model_config"])) != self.model.config:
            raise CheckpointError(f"{where}: it was made for a different model architecture / schedule / scale factor")
        if json.loads(state["disc_config"]) != self.disc_config.to_dict():
            raise CheckpointError(f"{where}: its discriminator config {state['disc_config']} differs from "
                                  f"{json.dumps(self.disc_config.to_dict(), sort_keys=True)}")
        if state["data_fingerprint"] != self.data_fingerprint:
            raise CheckpointError(f"{where}: it was trained on different images (or another autoencoder / "
                                  f"augmentation); start a new run (--restart / resume=False) or write to "
                                  f"another output")
        old = TrainConfig.from_dict(json.loads(state["train_config"])).to_dict()
        if old["schedule_steps"] is None:
            old["schedule_steps"] = old["steps"]
        if self.cfg.schedule_steps is None and old["schedule_steps"] != self.cfg.steps:
            # a run extended (or shortened) by a new `steps`: its schedules keep the length they were started
            # with, so the Weighted Learning weight and the learning rate continue from where they are (past the
            # end of the schedule they keep their final values) instead of jumping back along their curves
            self.cfg = dataclasses.replace(self.cfg, schedule_steps=old["schedule_steps"])
        new = self.cfg.to_dict()
        if new["schedule_steps"] is None:
            new["schedule_steps"] = new["steps"]
        diff = sorted(k for k in new if old.get(k) != new[k] and k not in TrainConfig.RESUMABLE_CHANGES)
        if diff:
            raise CheckpointError(f"{where}: training settings differ from the saved run: "
                                  + ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in diff)
                                  + " (only steps, precision and logging intervals may change on resume; start a "
                                    "new run with --restart / resume=False or write to another output)")
        self.G.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.D.load_state_dict(state["discriminator"])
        self.model.autoencoder.load_state_dict(state["autoencoder"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.Di is not None:  # image_d_weight matches the saved run's (checked above)
            if "image_discriminator" not in state or "opt_image_d" not in state:
                raise CheckpointError(f"{where}: it has no image discriminator, but image_d_weight > 0")
            self.Di.load_state_dict(state["image_discriminator"])
            self.opt_di.load_state_dict(state["opt_image_d"])
        self.step = int(state["step"])
        if "augment" in state:
            self.ada.load_state_dict(state["augment"])
        self.history = [dict(r) for r in state.get("history", [])]


def _opt_to_cpu(sd: dict) -> dict:
    return {"state": {k: {n: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "param_groups": copy.deepcopy(sd["param_groups"])}


def check_state(state, where: str = "training state", kind: str = "gan") -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{where} is not an LDDGAN training state (format {STATE_FORMAT!r})")
    if int(state.get("format_version", 0)) > STATE_VERSION:
        raise CheckpointError(f"{where}: format_version {state.get('format_version')} is newer than this library")
    if state.get("kind") != kind:
        raise CheckpointError(f"{where} is a {state.get('kind')!r} training state, expected {kind!r}")


def save_state(path: str, state: dict) -> str:
    """Write a training state atomically (torch.save of tensors and plain Python values only)."""

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str, kind: str = "gan") -> dict:
    """Read a training state with torch.load(weights_only=True): tensors and plain values, no code."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"training state {os.fspath(path)!r} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(f"training state {os.fspath(path)!r} could not be read: {e}") from None
    check_state(state, f"training state {os.fspath(path)!r}", kind)
    return state


def load_discriminator(path: str) -> tuple[dict, dict]:
    """(config dict, state dict) of a discriminator file, or of the D inside a training state (.pt)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"discriminator file {p!r} not found")
    with open(p, "rb") as f:
        zip_file = f.read(4) == b"PK\x03\x04"
    if zip_file:
        st = load_state(p)
        return json.loads(st["disc_config"]), st["discriminator"]
    tensors, meta = read_safetensors(p, what="discriminator")
    if (meta or {}).get("format") != DISC_FORMAT:
        raise CheckpointError(f"{p!r} is not a discriminator file (metadata format {DISC_FORMAT!r}); give one "
                              f"written by a training run (discriminator.safetensors) or its train_state.pt")
    return json.loads(meta["config"]), {k: v for k, v in tensors.items()}
