"""One-off timing behind the emoji recipe's choice of f = 8: seconds per iteration of the autoencoder (batch 32,
64 px) and of a whole GAN iteration (batch 32, three D steps, fast) on 8x8 latents (f = 8, G nf 64) and 16x16
latents (f = 4, G nf 64 and nf 32), one CPU thread, on random pictures, a few iterations each (first-iteration
overheads included, so the figures are upper bounds). Measured 2026-12-02 on the 2-core machine, nothing else
running: AE f=4 3.74 s/it, f=8 3.51 s/it; GAN f=4 nf 64 3.88 s/it, f=4 nf 32 2.35 s/it, f=8 nf 64 1.25 s/it.

    OMP_NUM_THREADS=1 python tools/emoji_latent_timing.py
"""
import tempfile
import time

import torch

torch.set_num_threads(1)
from lddgan_core.train.api import train_autoencoder, new_model, train_model, training_mode
from lddgan_core.train.autoencoder import AETrainConfig, load_autoencoder
from lddgan_core.train.config import autoencoder_config, default_discriminator, TrainConfig
from lddgan_core.train.latents import build_latents
from lddgan_core.train.files import RunPaths
x = torch.rand(64, 3, 64, 64) * 2 - 1
q = lambda m: None
for name, arch in [("f4", dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)),
                   ("f8", dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1))]:
    d = tempfile.mkdtemp()
    cfg = AETrainConfig(steps=12, batch_size=32, lr=4e-4, log_every=100)
    t = time.perf_counter()
    train_autoencoder(autoencoder_config(arch, 64), 64, images=x, cfg=cfg, paths=RunPaths.in_dir(d, "autoencoder"), log=q)
    print(name, "AE s/it", (time.perf_counter() - t) / 12, flush=True)

    ae, size = load_autoencoder(RunPaths.in_dir(d, "autoencoder").model)
    with training_mode():
        lat = build_latents(ae, size, images=x, seed=0, log=q)
    gens = {"f4": [dict(nf=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2),
                   dict(nf=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2)],
            "f8": [dict(nf=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(), nz=50, z_emb_dim=128, n_mlp=2)]}[name]
    for g in gens:
        model = new_model((ae, size), {**g, "use_tanh": False}, lat, num_timesteps=4, name="t", seed=0, scale_factor=1.0)
        for dsteps in (3,):
            c = TrainConfig(steps=6, batch_size=32, lr_g=2e-4, lr_d=2.5e-4, d_steps=dsteps, fast=True, r1_gamma=0.02, lazy_reg=15, log_every=100)
            t = time.perf_counter()
            train_model(model, lat, c, disc_config=default_discriminator(model.latent_shape, ngf=32), log=q)
            print(name, g["nf"], "GAN s/it", (time.perf_counter() - t) / 6, model.latent_shape, flush=True)
