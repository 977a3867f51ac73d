"""Autoencoder probe for the emoji recipe: train one autoencoder architecture on the emoji training split for a
fixed number of steps and report how well it reconstructs the HELD-OUT emoji (PSNR, L1, and the emoji
classifier's FID between held-out pictures and their reconstructions), so that candidate latent shapes can be
compared at equal budgets before a full recipe run.

    OMP_NUM_THREADS=1 python tools/emoji_ae_probe.py OUT --steps 600 --ch-mult 1,2,2,4 --embed-dim 4 [--disc-weight 0]

Writes OUT/probe.json and OUT/reconstructions.png (held-out emoji, top; reconstructions, bottom).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lddgan_core.data import emoji  # noqa: E402
from lddgan_core.data.images import save_png  # noqa: E402
from lddgan_core.eval import metrics as M  # noqa: E402
from lddgan_core.eval.emoji_eval import default_classifier, featurize  # noqa: E402
from lddgan_core.train.api import train_autoencoder  # noqa: E402
from lddgan_core.train.autoencoder import AETrainConfig, load_autoencoder  # noqa: E402
from lddgan_core.train.config import autoencoder_config  # noqa: E402
from lddgan_core.train.files import RunPaths  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ch", type=int, default=32)
    p.add_argument("--ch-mult", default="1,2,2,4")
    p.add_argument("--embed-dim", type=int, default=4)
    p.add_argument("--disc-weight", type=float, default=0.0, help="patch-GAN weight (0: L1 + KL only)")
    p.add_argument("--disc-start", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--model", default=None, help="evaluate this model's autoencoder (e.g. emoji) instead of training")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    arch = dict(kind="kl", embed_dim=a.embed_dim, z_channels=a.embed_dim, ch=a.ch,
                ch_mult=tuple(int(c) for c in a.ch_mult.split(",")), num_res_blocks=1)
    x, _ = emoji.make_emoji("train", a.size)
    h, _ = emoji.make_emoji("heldout", a.size)
    cfg = AETrainConfig(steps=a.steps, batch_size=a.batch, lr=a.lr, kl_weight=1e-6, disc_weight=a.disc_weight,
                        disc_start=a.disc_start, seed=0, log_every=50, save_every=200)
    paths = RunPaths.in_dir(a.out, "autoencoder")
    t0 = time.perf_counter()
    if a.model:
        import lddgan_core as L

        ae = L.load(a.model).autoencoder
        c = ae.cfg
        arch = dict(kind=c.kind, embed_dim=c.embed_dim, z_channels=c.z_channels, ch=c.ch, ch_mult=list(c.ch_mult),
                    num_res_blocks=c.num_res_blocks)
        a.embed_dim, a.ch_mult, a.steps = c.embed_dim, ",".join(map(str, c.ch_mult)), None
    else:
        train_autoencoder(autoencoder_config(arch, a.size), a.size, images=x.float() / 127.5 - 1, cfg=cfg,
                          paths=paths, log=lambda m: None)
        ae, _ = load_autoencoder(paths.model)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        xin = h.float() / 127.5 - 1
        rec = torch.cat([ae.decode(ae.encode(xin[i:i + 64])) for i in range(0, len(xin), 64)])  # posterior mean
    rec = rec.clamp(-1, 1)
    mse = ((rec - xin) / 2).pow(2).mean(dim=(1, 2, 3))
    rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    clf = default_classifier()
    fid = M.fid(featurize(clf, rec_u8)["features"].double(), featurize(clf, h)["features"].double())
    r = {"arch": arch, "latent_side": a.size // 2 ** (len(arch["ch_mult"]) - 1), "steps": a.steps,
         "batch": a.batch, "disc_weight": a.disc_weight, "train_seconds": seconds,
         "heldout_psnr_db": float((10 * torch.log10(1 / mse)).mean()),
         "heldout_l1": float(((rec - xin) / 2).abs().mean()), "heldout_recon_fid": float(fid)}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "probe.json"), "w") as f:
        json.dump(r, f, indent=1)
    grid = torch.cat([h[:8], rec_u8[:8]])
    save_png(torch.cat([torch.cat(list(grid[:8]), 2), torch.cat(list(grid[8:]), 2)], 1).permute(1, 2, 0).numpy(),
             os.path.join(a.out, "reconstructions.png"))
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
