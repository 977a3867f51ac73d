"""Training the first-stage autoencoder from scratch (LDM, Rombach et al. 2022, Sec. 3 and App. G).

KL: pixel L1/L2 (+ perceptual) + kl_weight * KL(q(z|x) || N(0, I)); kl_weight 1e-6 as in LDM, or 0 for the
paper's "free" latent (LDDGAN's CIFAR-10 model). VQ: pixel (+ perceptual) + codebook loss
||sg[h] - e||^2 + beta ||h - sg[e]||^2 with the straight-through estimator. Optional PatchGAN discriminator
(hinge loss, LDM's adaptive weight ||grad rec|| / ||grad adv|| at the decoder's last layer) from disc_start.

Loss scaling follows LDM so that kl_weight keeps its meaning: LDM sums the pixel and KL terms per sample;
dividing both by the pixels per sample gives mean pixel loss + kl_weight * sum_latent KL / pixels (Adam is
invariant to the common factor). Deviations from LDM: no learned output log-variance (LDM's starts at 0 and
adds a scalar; here it stays 0); the patch discriminator uses GroupNorm instead of BatchNorm so that it does
not depend on how a batch is split over processes or micro-batches.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import atomic_write
from ..config import AutoencoderConfig, FORMAT_VERSION
from ..errors import CheckpointError, ConfigError, InputError
from ..formats.lddgan_file import read_model_file
from ..formats.safe_load import read_safetensors
from ..nets.autoencoder import Autoencoder
from . import dist as tdist
from .config import _count, _DictMixin, _nonneg, _pos_int
from .files import AE_LOG_COLUMNS
from .schedules import lr_at, progress_of
from .trainer import _opt_to_cpu, check_state, mix_seed, STATE_FORMAT, STATE_VERSION

AE_FORMAT = "lddgan-autoencoder"
_SALT_DATA, _SALT_STEP, _SALT_DROPOUT, _SALT_INIT = 0xAE_DA7A, 0xAE_57E9, 0xAE_D209, 0xAE_1417


@dataclass(frozen=True)
class AETrainConfig(_DictMixin):
    """One autoencoder training run."""

    steps: int = 20000  # iterations
    batch_size: int = 8  # global batch (split over torchrun processes)
    micro_batch: int | None = None  # samples per forward (gradient accumulation)
    lr: float = 1e-4  # Adam lr of the autoencoder (LDM: 4.5e-6 x batch)
    lr_d: float | None = None  # Adam lr of the patch discriminator (None: lr)
    beta1: float = 0.5  # Adam betas of LDM
    beta2: float = 0.9
    lr_schedule: str = "constant"  # or "cosine"
    pixel_loss: str = "l1"  # "l1" or "l2"
    kl_weight: float = 1e-6  # KL only; 0: the "free" latent
    codebook_beta: float = 0.25  # VQ commitment weight
    codebook_weight: float = 1.0  # VQ codebook loss weight
    perceptual_weight: float = 0.0  # > 0 needs perceptual weights (a local VGG-16 file)
    disc_weight: float = 0.0  # patch-GAN weight (LDM: 0.5); 0: no discriminator
    disc_start: int = 0  # iteration at which the patch GAN starts (LDM: 50001)
    disc_layers: int = 3  # PatchGAN depth
    disc_ndf: int = 64  # PatchGAN base width
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0
    save_every: int = 0
    num_samples: int = 8  # images in a reconstruction grid

    def __post_init__(self):
        _pos_int(self, "steps", "batch_size", "log_every", "num_samples", "disc_layers", "disc_ndf")
        if self.micro_batch is not None:
            _pos_int(self, "micro_batch")
        _nonneg(self, "lr", "kl_weight", "codebook_beta", "codebook_weight", "perceptual_weight", "disc_weight")
        _count(self, "disc_start", "sample_every", "save_every")
        if self.lr_d is not None:
            _nonneg(self, "lr_d")
        if self.pixel_loss not in ("l1", "l2"):
            raise ConfigError(f"AETrainConfig.pixel_loss must be 'l1' or 'l2', got {self.pixel_loss!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"AETrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    RESUMABLE_CHANGES = ("steps", "log_every", "sample_every", "save_every", "num_samples")


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017; the NLayerDiscriminator of taming / LDM): 4x4 convs, stride 2 for the
    first n_layers, LeakyReLU 0.2, widths ndf * min(2^i, 8); GroupNorm in place of BatchNorm. [B,3,H,W] ->
    logits [B, 1, h, w]."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers, c = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)], ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(c, out, 4, 2 if i < n_layers else 1, 1, bias=False),
                       nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
            c = out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # the taming init: N(0, 0.02) convs, N(1, 0.02) norm scales
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over C, h, w: [B]."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def vq_quantize(ae: Autoencoder, h: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(straight-through quantized h, codebook loss ||sg[h] - e||^2 + beta ||h - sg[e]||^2 (means))."""
    e = ae.quantize.embedding(ae.quantize.indices(h.detach())).permute(0, 3, 1, 2)
    loss = F.mse_loss(e, h.detach()) + beta * F.mse_loss(h, e.detach())
    return h + (e - h).detach(), loss


def adaptive_weight(rec: torch.Tensor, adv: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """LDM: ||d rec / d last|| / (||d adv / d last|| + 1e-4), clamped to [0, 1e4], no gradient."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderTrainer:
    """Trains an Autoencoder (and optionally a patch discriminator) on images [N, 3, H, W] in [-1, 1]."""

    log_columns = AE_LOG_COLUMNS
    curve_keys = ("loss", "rec", "perceptual", "g_adv", "d_loss")

    def __init__(self, ae_config: AutoencoderConfig, images: torch.Tensor, cfg: AETrainConfig, *, image_size: int,
                 perceptual: nn.Module | None = None, device="cpu", world: tdist.World | None = None,
                 data_fingerprint: str = ""):
        self.cfg, self.world, self.device = cfg, world or tdist.World(), torch.device(device)
        self.ae_config, self.image_size = ae_config, int(image_size)
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (image_size, image_size):
            raise InputError(f"autoencoder training images: expected [N, 3, {image_size}, {image_size}], got "
                             f"{tuple(images.shape)}")
        # kept as uint8 (a quarter of the memory); exact for images that came from 8-bit files
        self.images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        self.data_fingerprint = data_fingerprint
        self.local_batch, self.micro = tdist.split_batch(cfg.batch_size, cfg.micro_batch, self.world)
        if cfg.disc_weight > 0 and image_size < 3 * 2 ** cfg.disc_layers:
            raise ConfigError(f"a patch discriminator with disc_layers={cfg.disc_layers} needs images of at least "
                              f"{3 * 2 ** cfg.disc_layers} px (got {image_size}); use fewer layers")
        if cfg.perceptual_weight > 0 and perceptual is None:
            raise ConfigError("perceptual_weight > 0 needs perceptual weights: give a local VGG-16 file "
                              "(--perceptual-weights); nothing is downloaded")
        self.perceptual = perceptual.to(self.device) if perceptual is not None and cfg.perceptual_weight > 0 else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(cfg.seed, 0, _SALT_INIT))
            self.ae = Autoencoder(ae_config)
            self.D = PatchDiscriminator(3, cfg.disc_ndf, cfg.disc_layers) if cfg.disc_weight > 0 else None
        self.ae.to(self.device).train()
        nets = [self.ae] + ([self.D] if self.D is not None else [])
        for n in nets:
            n.to(self.device).train()
            tdist.broadcast_module(n, self.world)
        betas = (cfg.beta1, cfg.beta2)
        self.opt = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = (torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d if cfg.lr_d is not None else cfg.lr,
                                       betas=betas) if self.D is not None else None)
        self.step, self.history, self._perms = 0, [], {}

    # -- data --------------------------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        N, B = self.images.shape[0], self.cfg.batch_size
        out = []
        for p in range(step * B, step * B + B):
            e = p // N
            if e not in self._perms:
                if len(self._perms) > 4:
                    self._perms.clear()
                g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, e, _SALT_DATA))
                self._perms[e] = torch.randperm(N, generator=g)
            out.append(self._perms[e][p % N])
        return torch.stack(out)

    def _chunks(self, step: int):
        idx = self.batch_indices(step)
        C, f = self.ae_config.embed_dim, self.ae_config.downsample_factor
        g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, _SALT_STEP))
        eps = torch.randn(self.cfg.batch_size, C, self.image_size // f, self.image_size // f, generator=g)
        start = self.world.rank * self.local_batch
        for j in range(start, start + self.local_batch, self.micro):
            x = self.images[idx[j:j + self.micro]].float() / 127.5 - 1.0
            yield x.to(self.device), eps[j:j + self.micro].to(self.device)

    # -- one iteration -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, eps: torch.Tensor | None):
        """x [b, 3, H, W] -> (reconstruction, latent-side losses dict)."""
        ae, cfg = self.ae, self.cfg
        h = ae.quant_conv(ae.encoder(x))
        if self.ae_config.kind == "kl":
            mean, logvar = h.chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            z = mean + torch.exp(0.5 * logvar) * eps if eps is not None else mean
            extra = {"kl": kl_divergence(mean, logvar).mean() / x[0].numel()}
        else:
            z, cb = vq_quantize(ae, h, cfg.codebook_beta)
            extra = {"codebook": cb}
        return ae.decoder(ae.post_quant_conv(z)), extra

    def train_step(self) -> dict[str, float]:
        cfg, s = self.cfg, self.step
        p = progress_of(s, cfg.steps)
        lr = lr_at(p, cfg.lr, cfg.lr_schedule)
        for gr in self.opt.param_groups:
            gr["lr"] = lr
        use_d = self.D is not None and s >= cfg.disc_start
        frac = self.micro / self.local_batch
        logs: dict[str, float] = {}

        def add(k, v):
            logs[k] = logs.get(k, 0.0) + frac * float(v)

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(mix_seed(cfg.seed, s, _SALT_DROPOUT))
            self.opt.zero_grad(set_to_none=True)
            recs = []
            for x, eps in self._chunks(s):
                xr, extra = self.forward(x, eps)
                diff = (xr - x).abs() if cfg.pixel_loss == "l1" else (xr - x).pow(2)
                rec = diff.mean()
                add("rec", rec.detach())
                if self.perceptual is not None:
                    pl = self.perceptual(xr, x).mean()
                    add("perceptual", pl.detach())
                    rec = rec + cfg.perceptual_weight * pl
                loss = rec
                if "kl" in extra:
                    add("kl", extra["kl"].detach())
                    loss = loss + cfg.kl_weight * extra["kl"]
                if "codebook" in extra:
                    add("codebook", extra["codebook"].detach())
                    loss = loss + cfg.codebook_weight * extra["codebook"]
                if use_d:
                    self.D.requires_grad_(False)
                    adv = -self.D(xr).mean()
                    dw = adaptive_weight(rec, adv, self.ae.decoder.conv_out.weight) * cfg.disc_weight
                    self.D.requires_grad_(True)
                    add("g_adv", adv.detach())
                    add("d_weight", dw)
                    loss = loss + dw * adv
                add("loss", loss.detach())
                (frac * loss).backward()
                recs.append((x, xr.detach()))
            tdist.average_gradients(self.ae.parameters(), self.world)
            self.opt.step()
            if use_d:
                self.opt_d.zero_grad(set_to_none=True)
                for x, xr in recs:
                    dl = hinge_d_loss(self.D(x), self.D(xr))
                    add("d_loss", dl.detach())
                    (frac * dl).backward()
                tdist.average_gradients(self.D.parameters(), self.world)
                self.opt_d.step()
        self.opt.zero_grad(set_to_none=True)
        logs = tdist.average_scalars(logs, self.world, self.device)
        logs.update(step=s + 1, lr=lr)
        self.step = s + 1
        return logs

    # -- outputs -----------------------------------------------------------------------------------------
    def synced_modules(self):
        return (self.ae,) + ((self.D,) if self.D is not None else ())

    @torch.no_grad()
    def sample_images(self, seeds=None) -> torch.Tensor:
        """First num_samples training images above their reconstructions (posterior mean / quantized):
        [2n, 3, H, W] in [-1, 1]; make_grid with nrow=n shows them as two rows."""
        n = min(self.cfg.num_samples, self.images.shape[0])
        x = (self.images[:n].float() / 127.5 - 1.0).to(self.device)
        was = self.ae.training
        self.ae.eval()
        try:
            xr = self.ae.decode(self.ae.encode(x)).float().clamp(-1, 1)
        finally:
            self.ae.train(was)
        return torch.cat([x, xr]).cpu()

    @torch.no_grad()
    def reconstruction_l1(self, n: int = 64) -> float:
        """Mean |decode(encode(x)) - x| over the first n training images (eval mode, posterior mean)."""
        x = (self.images[:n].float() / 127.5 - 1.0).to(self.device)
        was = self.ae.training
        self.ae.eval()
        try:
            return float((self.ae.decode(self.ae.encode(x)).float() - x).abs().mean())
        finally:
            self.ae.train(was)

    def finish(self, paths, provenance: dict | None = None):
        files = {}
        if paths.model:
            files["model"] = save_autoencoder(self.ae, paths.model, self.image_size, provenance)
        return self.ae, files

    def state_dict(self) -> dict:
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        st = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "kind": "autoencoder", "step": self.step,
              "train_config": self.cfg.to_json(), "ae_config": json.dumps(self.ae_config.to_dict(), sort_keys=True),
              "image_size": self.image_size, "data_fingerprint": self.data_fingerprint,
              "autoencoder": cpu(self.ae.state_dict()), "opt": _opt_to_cpu(self.opt.state_dict()),
              "rng": {"seed": self.cfg.seed, "step": self.step}, "history": [dict(r) for r in self.history]}
        if self.D is not None:
            st.update(discriminator=cpu(self.D.state_dict()), opt_d=_opt_to_cpu(self.opt_d.state_dict()))
        return st

    def load_state_dict(self, state: dict, where: str = "training state") -> None:
        check_state(state, where, kind="autoencoder")
        if json.loads(state["ae_config"]) != self.ae_config.to_dict() or state["image_size"] != self.image_size:
            raise CheckpointError(f"{where}: it was made for another autoencoder architecture or image size")
        if state["data_fingerprint"] != self.data_fingerprint:
            raise CheckpointError(f"{where}: it was trained on different images; start a new run (--restart)")
        old, new = json.loads(state["train_config"]), self.cfg.to_dict()
        diff = sorted(k for k in new if old.get(k) != new[k] and k not in AETrainConfig.RESUMABLE_CHANGES)
        if diff:
            raise CheckpointError(f"{where}: training settings differ from the saved run: "
                                  + ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in diff))
        self.ae.load_state_dict(state["autoencoder"])
        self.opt.load_state_dict(state["opt"])
        if self.D is not None:
            self.D.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.history = [dict(r) for r in state.get("history", [])]


# -- the autoencoder file ---------------------------------------------------------------------------------
def save_autoencoder(ae: Autoencoder, path: str, image_size: int, provenance: dict | None = None) -> str:
    """An autoencoder on its own: tensors ``autoencoder.*`` and metadata {format: lddgan-autoencoder, config,
    image_size}. ``lddgan train --autoencoder FILE`` builds a new LDDGAN on it."""
    from safetensors.torch import save_file

    tensors = {"autoencoder." + k: v.detach().cpu().contiguous() for k, v in ae.state_dict().items()}
    meta = {"format": AE_FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(ae.cfg.to_dict(), sort_keys=True), "image_size": str(int(image_size)),
            "provenance": json.dumps(provenance or {}, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_autoencoder(path: str, device="cpu") -> tuple[Autoencoder, int]:
    """(Autoencoder in eval mode, its image size) from an autoencoder file or from a full LDDGAN model file."""

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"autoencoder file {p!r} not found")
    tensors, meta = read_safetensors(p, what="autoencoder")
    meta = meta or {}
    if meta.get("format") == AE_FORMAT:
        cfg, size = AutoencoderConfig.from_dict(json.loads(meta["config"])), int(meta["image_size"])
    else:
        try:
            mmeta, tensors = read_model_file(p)
        except CheckpointError:
            raise CheckpointError(f"{p!r} is neither an autoencoder file (from `lddgan train-autoencoder`) nor an "
                                  f"LDDGAN model") from None
        cfg = AutoencoderConfig.from_dict(mmeta["config_dict"]["autoencoder"])
        size = int(mmeta["config_dict"]["image_size"])
    ae = Autoencoder(cfg)
    sd = {k[len("autoencoder."):]: v for k, v in tensors.items() if k.startswith("autoencoder.")}
    target = ae.state_dict()
    missing, unexpected = sorted(set(target) - set(sd)), sorted(set(sd) - set(target))
    shapes = [k for k in set(sd) & set(target) if sd[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{p!r}: autoencoder weights do not match its config: missing {missing[:10]}, "
                              f"unexpected {unexpected[:10]}, shape mismatches {shapes[:10]}")
    ae.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return ae.to(device).eval(), size
