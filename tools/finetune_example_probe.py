"""How far a fine-tune on one picture moves the shipped model toward it (the fine-tune example's settings).

    OMP_NUM_THREADS=1 python tools/finetune_example_probe.py PICTURE STEPS BATCH LR_G AUGMENT [OUT.png]

Prints the mean RMS distance ([-1, 1]) of 64 samples (seeds 0..63) to the picture (resized to the model's size)
before and after the run, and writes the picture and 15 samples as a grid. build_workflows.py's EXAMPLE_STEPS /
EXAMPLE_LR_G were chosen with it on ComfyUI's input/example.png."""
import sys
import time

import numpy as np
import torch
from PIL import Image

import lddgan_core as L
from lddgan_core.data.images import make_grid
from lddgan_core.hub.shipped import default_model_path
from lddgan_core.train import finetune


def main(picture, steps, batch, lr_g, augment, out=None):
    torch.set_num_threads(1)
    model = L.load(default_model_path())
    s = model.config.image_size
    im = Image.open(picture).convert("RGB").resize((s, s), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    def dist(m):
        with torch.no_grad():
            y = m.decode(m.sample(64, seed=0)).clamp(-1, 1)
        return float(((y - x) ** 2).mean(dim=(1, 2, 3)).sqrt().mean()), y

    before, _ = dist(model)
    t0 = time.perf_counter()
    # the example workflow's other widget values (tools/build_workflows.py: sigmoid Weighted Learning, R1 1.0); the
    # fields without a widget (lazy_reg, rec_value, D augmentation) are FINETUNE_DEFAULTS', as in the node
    res = finetune(model, images=x, steps=int(steps), batch_size=int(batch), lr_g=float(lr_g), augment=int(augment),
                   lr_d=1e-4, schedule="sigmoid", gamma=6.0, r1_gamma=1.0, ema_decay=0.999, seed=0)
    seconds = time.perf_counter() - t0
    after, y = dist(res.model)
    print(f"{steps} iterations, batch {batch}, lr_g {lr_g}, augment {augment}: {seconds:.0f} s; "
          f"RMS distance of 64 samples to the picture {before:.3f} -> {after:.3f}")
    if out:
        Image.fromarray(make_grid(torch.cat([x, y[:15]]), nrow=8)).save(out)


if __name__ == "__main__":
    if len(sys.argv) not in (6, 7):
        sys.exit(__doc__)
    main(*sys.argv[1:])
