"""Probe (eighteenth session): fine-tune only the decoder of the shipped shapes model (encoder frozen, so the
generator's latent space is unchanged) and evaluate the shipped generator through it (n = 2000).
Usage (repo root): OMP_NUM_THREADS=1 python docs/candidates/decoder_probe/dec_probe.py none|noise|chain STEPS SMAX OUT
  noise: latents + U(0, SMAX) x std Gaussian noise; chain: half the batch from the model's chain started at real x_k
  (k = 1..3) of the training images, paired with those images. Writes OUT.json, OUT.png, OUT.pt."""
import os, sys, time, json, torch, torch.nn.functional as F
torch.set_num_threads(1)
from lddgan_core.model import load_model
from lddgan_core.data.shapes import make_shapes, TRAIN_SEED, to_model_range
from lddgan_core.diffusion.schedule import posterior_sample, q_sample
from lddgan_core.eval.evaluate import evaluate_images
mode = sys.argv[1]; steps = int(sys.argv[2]); smax = float(sys.argv[3]); out = sys.argv[4]
m = load_model("lddgan_core/models/lddgan_shapes32.safetensors"); m.set_fast(False)
ae = m.autoencoder.float()
t0 = time.time()
x, _ = make_shapes(20000, TRAIN_SEED, 32); x = to_model_range(x)
with torch.no_grad():
    mean, logvar = [], []
    for i in range(0, len(x), 1000):
        a, b = ae.encode_posterior(x[i:i+1000]); mean.append(a); logvar.append(b)
    mean = torch.cat(mean); std_post = torch.cat(logvar).mul(0.5).exp()
zstd = float(mean.std()); print("enc", time.time()-t0, "latent std", zstd, "post std", float(std_post.mean()), flush=True)
G = m.generator.eval(); T = m.num_timesteps; nz = m.config.generator.nz; sf = m.scale_factor
chain = None
if mode == "chain":  # chain outputs from real x_k (k=1..3) of the training images, paired with the images
    g = torch.Generator().manual_seed(7); outs = []; ks = []
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            z0 = mean[i:i+1000] / sf; n = len(z0); k = 1 + (i // 1000) % 3
            xx = q_sample(m.coefficients, z0, torch.full((n,), k), torch.randn(z0.shape, generator=g))
            for t in range(k - 1, -1, -1):
                tt = torch.full((n,), t)
                pred = G(xx, tt, torch.randn(n, nz, generator=g))
                xx = posterior_sample(m.posterior, pred, xx, tt, torch.randn(z0.shape, generator=g))
            outs.append(xx * sf); ks.append(k)
    chain = torch.cat(outs); print("chain", time.time()-t0, flush=True)
dec = ae.decoder if hasattr(ae, "decoder") else None
params = [p for n_, p in ae.named_parameters() if n_.startswith(("decoder", "post_quant"))]
print("dec params", sum(p.numel() for p in params), flush=True)
for n_, p in ae.named_parameters(): p.requires_grad_(any(p is q for q in params))
opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.9))
g = torch.Generator().manual_seed(0)
for s in range(steps):
    idx = torch.randint(0, len(x), (32,), generator=g)
    z = mean[idx] + std_post[idx] * torch.randn(32, *mean.shape[1:], generator=g)
    if mode == "noise":
        r = smax * torch.rand(32, 1, 1, 1, generator=g)
        z = z + r * zstd * torch.randn(z.shape, generator=g)
    elif mode == "chain":
        use = torch.rand(32, generator=g) < 0.5
        z = torch.where(use[:, None, None, None], chain[idx], z)
    loss = F.l1_loss(ae.decode(z).float(), x[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if s % 200 == 0: print(s, round(float(loss), 4), round(time.time()-t0, 1), flush=True)
ae.eval()
torch.save({k: v for k, v in ae.state_dict().items()}, out + ".pt")
from lddgan_core.data.shapes import HELDOUT_SEED
with torch.no_grad():
    if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(out)), "lat2000.pt")):
        torch.save(m.sample(2000, seed=10000), os.path.join(os.path.dirname(os.path.abspath(out)), "lat2000.pt"))
    lat = torch.load(os.path.join(os.path.dirname(os.path.abspath(out)), "lat2000.pt"))
    img = torch.cat([ae.decode(lat[i:i+500]).float() for i in range(0, 2000, 500)]).clamp(-1, 1)
    r = evaluate_images(img)["generated"]
    xh, _ = make_shapes(1000, HELDOUT_SEED + 10, 32); xh = to_model_range(xh)
    rec = ae.decode(ae.encode(xh)).float().clamp(-1, 1)
    psnr = float(10 * torch.log10(4 / ((rec - xh) ** 2).mean((1, 2, 3))).mean())
    res = {"mode": mode, "steps": steps, "smax": smax, "psnr": round(psnr, 2),
           **{k: round(float(r[k]), 4) for k in ("fid", "precision", "recall", "coverage", "unrecognised", "modes_covered_at_threshold", "kl_gen_data")if k in r}}
    print(json.dumps(res), flush=True)
    open(out + ".json", "w").write(json.dumps(res))
    from lddgan_core.data.images import make_grid, save_png
    save_png(make_grid(img[:64], nrow=8), out + '.png')
