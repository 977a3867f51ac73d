"""The GAN trainer: one iteration's losses and updates, learning on a synthetic dataset, exact resume,
fine-tuning (input untouched, official conversions, saved discriminators), interrupt and resume."""
import numpy as np
import pytest
import torch

import lddgan_core as L
from lddgan_core.errors import CheckpointError, InputError
from lddgan_core.train import (GANTrainer, TrainConfig, build_latents, finetune, load_discriminator, load_state,
                               rec_weight, save_state)

TINY_D = dict(kind="small", in_channels=8, ngf=8, t_emb_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def colour_squares(n=16, seed=0):
    """Synthetic data: n solid-colour 16x16 images in [-0.8, 0.8]."""
    cols = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8
    return cols.expand(n, 3, 16, 16).clone()


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def run_straight_and_resumed(m, data, cfg, n: int, split: int, path):
    """Two trainers for cfg: one run n iterations straight, one run `split`, saved to `path`, reloaded into a fresh
    trainer and run to n. Returns (straight, resumed)."""
    a = GANTrainer(m, data, cfg, disc_config=TINY_D)
    for _ in range(n):
        a.train_step()
    b = GANTrainer(m, data, cfg, disc_config=TINY_D)
    for _ in range(split):
        b.train_step()
    save_state(str(path), b.state_dict())
    del b
    c = GANTrainer(m, data, cfg, disc_config=TINY_D)
    c.load_state_dict(load_state(str(path)))
    assert c.step == split
    for _ in range(n - split):
        c.train_step()
    return a, c


@pytest.fixture
def kl_setup(random_model):
    m = random_model("kl")
    return m, build_latents(m.autoencoder, 16, images=colour_squares(6))


def test_one_iteration(kl_setup):
    m, data = kl_setup
    before_g, before_ae = weights(m.generator), weights(m.autoencoder)
    tr = GANTrainer(m, data, TrainConfig(steps=5, batch_size=4, lazy_reg=2), disc_config=TINY_D)
    d0, ae0 = weights(tr.D), weights(tr.model.autoencoder)
    logs = tr.train_step()
    assert set(logs) >= {"d_real", "d_fake", "r1", "g_adv", "rec", "w", "lr_g", "lr_d", "d_loss", "g_loss"}
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["w"] == rec_weight(0.0) and logs["g_loss"] == pytest.approx(logs["g_adv"] + logs["w"] * logs["rec"])
    assert 0.3 < logs["d_real"] < 1.1 and 0.3 < logs["d_fake"] < 1.1  # ~log 2 for a fresh D
    assert max_diff(weights(tr.G), before_g) > 0 and max_diff(weights(tr.D), d0) > 0
    assert max_diff(weights(tr.model.autoencoder), ae0) == 0  # frozen
    assert max_diff(weights(m.generator), before_g) == 0 and max_diff(weights(m.autoencoder), before_ae) == 0
    assert "r1" not in tr.train_step()  # lazy: R1 on iterations 0, 2, 4 only
    assert "r1" in tr.train_step()


def test_ema_update_formula(kl_setup):
    m, data = kl_setup
    tr = GANTrainer(m, data, TrainConfig(steps=3, batch_size=2, ema_decay=0.9), disc_config=TINY_D)
    ema0 = weights(tr.ema)
    tr.train_step()
    g1 = weights(tr.G)
    expect = {k: 0.9 * ema0[k] + 0.1 * g1[k] for k in ema0}
    assert max_diff(weights(tr.ema), expect) < 1e-6  # float32 rounding of the two forms
    assert max_diff(weights(tr.ema), g1) > 1e-5 and max_diff(weights(tr.ema), ema0) > 1e-6
    warm = GANTrainer(m, data, TrainConfig(steps=3, batch_size=2, ema_decay=0.999, ema_warmup=True), disc_config=TINY_D)
    assert [warm.ema_decay_at(s) for s in (0, 10, 100000)] == [0.1, 0.55, 0.999]


def sample_nn_distance(tr, n=32):
    """Mean L1 distance (diffusion space) from n generated latents to their nearest training latent."""
    from lddgan_core.diffusion.sampler import NoiseSource, sample_loop

    C, h, w = tr.model.latent_shape
    src = NoiseSource.from_seeds(list(range(n)), (C, h, w), tr.model.config.generator.nz, tr.model.num_timesteps)
    tr.G.eval()
    with torch.no_grad():
        x, _, _ = sample_loop(tr.G, tr.model.posterior, src.initial(), src, tr.model.num_timesteps)
    tr.G.train()
    data = tr.data.mean / tr.model.scale_factor
    return (x[:, None] - data[None]).abs().mean(dim=(2, 3, 4)).min(1).values.mean().item()


def test_tiny_model_learns(random_model):
    """16 solid-colour images, reconstruction weight held at 1, 120 iterations: the L1 error of G's x0
    prediction (fixed t, noises, z) and the distance of generated latents to the nearest training latent both
    drop by more than 2x (measured 0.344 -> 0.128 and 0.301 -> 0.112, 2.7x each). The L1 floor (~0.11, the
    L1 of predicting the data median) is set by the T=4 schedule: even the least noisy input x_1 has noise
    variance 0.48, which this 0.1M-parameter G does not see through in 120 iterations."""
    m = random_model("kl")
    data = build_latents(m.autoencoder, 16, images=colour_squares(16))
    cfg = TrainConfig(steps=120, batch_size=8, lr_g=1e-3, lr_d=1e-4, latent_mode="mean", rec_schedule="constant",
                      ema_decay=0.0)
    tr = GANTrainer(m, data, cfg, disc_config=TINY_D)
    rec0, nn0 = tr.reconstruction_l1(), sample_nn_distance(tr)
    for _ in range(cfg.steps):
        tr.train_step()
    rec1, nn1 = tr.reconstruction_l1(), sample_nn_distance(tr)
    print(f"reconstruction L1 {rec0:.4f} -> {rec1:.4f} ({rec0 / rec1:.2f}x); "
          f"sample-to-data distance {nn0:.4f} -> {nn1:.4f} ({nn0 / nn1:.2f}x)")
    assert rec1 < rec0 / 2 and nn1 < nn0 / 2


def test_resume_is_exact(kl_setup, tmp_path):
    """6 iterations straight == 3 + save + a fresh trainer loading the file + 3, bit for bit."""
    m, data = kl_setup
    cfg = TrainConfig(steps=6, batch_size=4, micro_batch=2, lazy_reg=2, lr_schedule="cosine", ema_warmup=True,
                      latent_mode="sample")
    a, c = run_straight_and_resumed(m, data, cfg, 6, 3, tmp_path / "s.pt")
    for net in ("G", "ema", "D"):
        assert max_diff(weights(getattr(a, net)), weights(getattr(c, net))) == 0.0, net
    sa, sc = a.opt_g.state_dict()["state"], c.opt_g.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sc[i]["exp_avg_sq"]) for i in sa)
    # and the run is not trivially constant: a different seed gives different weights
    d = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "seed": 1}), disc_config=TINY_D)
    for _ in range(6):
        d.train_step()
    assert max_diff(weights(a.G), weights(d.G)) > 1e-6


def test_resume_rejects_changed_settings(kl_setup, tmp_path):
    m, data = kl_setup
    tr = GANTrainer(m, data, TrainConfig(steps=2, batch_size=2), disc_config=TINY_D)
    tr.train_step()
    st = tr.state_dict()
    other = GANTrainer(m, data, TrainConfig(steps=9, batch_size=2, lr_g=1e-3), disc_config=TINY_D)
    with pytest.raises(CheckpointError, match=r"lr_g 0\.0002 -> 0\.001"):
        other.load_state_dict(st)
    longer = GANTrainer(m, data, TrainConfig(steps=9, batch_size=2), disc_config=TINY_D)
    longer.load_state_dict(st)  # more steps: allowed
    assert longer.step == 1
    data2 = build_latents(m.autoencoder, 16, images=colour_squares(6, seed=1))
    with pytest.raises(CheckpointError, match="different images"):
        GANTrainer(m, data2, TrainConfig(steps=2, batch_size=2), disc_config=TINY_D).load_state_dict(st)
    with pytest.raises(CheckpointError, match="not an LDDGAN training state"):
        torch.save({"a": 1}, tmp_path / "x.pt")
        load_state(str(tmp_path / "x.pt"))


def test_finetune_official_model_input_untouched(tiny_model, tmp_path):
    """Fine-tuning a converted official model returns a new model; the input keeps its weights."""
    before = weights(tiny_model)
    res = finetune(tiny_model, images=torch.rand(3, 3, 20, 20) * 2 - 1, steps=3, batch_size=2, seed=0,
                   disc_config=dict(kind="small", in_channels=2 * tiny_model.latent_shape[0], ngf=8, t_emb_dim=16),
                   num_samples=4, save_path=str(tmp_path / "ft.safetensors"))
    assert max_diff(weights(tiny_model), before) == 0.0
    assert res.model is not tiny_model and res.step == 3 and not res.interrupted
    assert max_diff(weights(res.model.generator), weights(tiny_model.generator)) > 0
    assert max_diff(weights(res.model.autoencoder), weights(tiny_model.autoencoder)) == 0
    assert res.loss_curve.dtype == np.uint8 and res.loss_curve.ndim == 3 and res.loss_curve.shape[2] == 3
    assert res.sample_grid.dtype == np.uint8 and res.sample_grid.shape[2] == 3
    assert [r["step"] for r in res.losses] == [1, 2, 3]
    for f in ("ft.safetensors", "ft.train.pt", "ft.discriminator.safetensors", "ft.losses.csv", "ft.loss_curve.png"):
        assert (tmp_path / f).is_file(), f
    back = L.load(tmp_path / "ft.safetensors")
    assert back.config.provenance["source"] == "finetune" and back.config.provenance["base"]
    assert max_diff(weights(back.generator), weights(res.model.generator)) == 0
    assert res.checkpoint_path == str(tmp_path / "ft.train.pt")


def test_finetune_from_saved_discriminator(kl_setup, tmp_path):
    m, _ = kl_setup
    x = colour_squares(4)
    first = finetune(m, images=x, steps=2, batch_size=2, disc_config=TINY_D, save_path=str(tmp_path / "a.safetensors"))
    cfg, sd = load_discriminator(str(tmp_path / "a.discriminator.safetensors"))
    assert cfg == {**TINY_D, "num_layers": 3, "leaky_slope": 0.2, "fir_kernel": [1, 3, 3, 1]}
    data = build_latents(m.autoencoder, 16, images=x)
    tr = GANTrainer(first.model, data, TrainConfig(steps=1, batch_size=2), disc_config=cfg, discriminator_state=sd)
    assert max_diff(weights(tr.D), sd) == 0
    cfg2, sd2 = load_discriminator(str(tmp_path / "a.train.pt"))  # the D inside a training state
    assert cfg2 == cfg and max_diff(sd2, sd) == 0
    with pytest.raises(CheckpointError, match="not a discriminator file"):
        load_discriminator(str(tmp_path / "a.safetensors"))


def test_finetune_interrupt_and_resume_equals_uninterrupted(kl_setup, tmp_path):
    """should_stop ends the run cleanly after iteration 2 (state saved); a later call with the same save_path
    resumes and ends with exactly the weights of an uninterrupted run. A progress callback that raises (as
    ComfyUI's interrupt does) also leaves a resumable state."""
    m, _ = kl_setup
    x = colour_squares(5)
    kw = dict(images=x, steps=5, batch_size=2, disc_config=TINY_D, seed=3)
    straight = finetune(m, **kw)
    calls = []
    res = finetune(m, **kw, save_path=str(tmp_path / "i.safetensors"), should_stop=lambda: len(calls) >= 2,
                   progress=lambda s, n, logs, prev: calls.append(s))
    assert res.interrupted and res.step == 2 and calls == [1, 2]
    assert load_state(str(tmp_path / "i.train.pt"))["step"] == 2

    class Interrupt(Exception):
        pass

    def boom(step, total, logs, preview):
        if step == 4:
            raise Interrupt
    with pytest.raises(Interrupt):
        finetune(m, **kw, save_path=str(tmp_path / "i.safetensors"), progress=boom)
    assert load_state(str(tmp_path / "i.train.pt"))["step"] == 4
    done = finetune(m, **kw, save_path=str(tmp_path / "i.safetensors"))
    assert done.step == 5 and not done.interrupted
    assert max_diff(weights(done.model.generator), weights(straight.model.generator)) == 0.0
    assert [r["step"] for r in done.losses] == [1, 2, 3, 4, 5]
    no_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert no_time(done.losses) == no_time(straight.losses)  # the log survives the interruptions too
    fresh = finetune(m, **{**kw, "steps": 2}, save_path=str(tmp_path / "i.safetensors"), resume=False)
    assert fresh.step == 2  # resume=False starts over, keeping the old state aside
    assert load_state(str(tmp_path / "i.train.prev.pt"))["step"] == 5


def test_finetune_under_inference_mode_with_previews(random_model, tmp_path):
    """ComfyUI runs nodes under torch.inference_mode: model and images are inference tensors there."""
    with torch.inference_mode():
        m = random_model("vq")
        x = colour_squares(3)
        previews = []
        res = finetune(m, images=x, steps=2, batch_size=2, num_samples=2, preview_every=1,
                       disc_config=dict(kind="small", in_channels=6, ngf=8, t_emb_dim=16),
                       progress=lambda s, n, logs, prev: previews.append(None if prev is None else prev.shape))
    assert previews == [(2, 3, 16, 16)] * 2 and res.step == 2
    assert res.model.sample(batch_size=1, seed=0).shape == (1, 3, 8, 8)


def test_finetune_input_errors(kl_setup, tmp_path):
    m, _ = kl_setup
    with pytest.raises(InputError, match="give images"):
        finetune(m, steps=1)
    with pytest.raises(InputError, match="has no images"):
        finetune(m, folder=str(tmp_path), steps=1)
    with pytest.raises(InputError, match="must be an LDDGAN"):
        finetune(object(), images=colour_squares(2))
    with pytest.raises(InputError, match=r"save_path must end with \.safetensors"):
        finetune(m, images=colour_squares(2), save_path=str(tmp_path / "x.pt"))


def test_discriminator_learns_against_a_frozen_generator(kl_setup):
    """D steps only (G stays at its random init): D's loss must leave the chance level 2 ln 2 = 1.386. Guards
    the D half of the trainer (losses, R1, gradient flow, optimizer), which a full run at equilibrium cannot show."""
    m, data = kl_setup
    tr = GANTrainer(m, data, TrainConfig(steps=80, batch_size=8, lr_d=1e-3, lazy_reg=4), disc_config=TINY_D)
    g0 = weights(tr.G)
    losses = []
    for s in range(80):
        tr.opt_d.zero_grad(set_to_none=True)
        logs = tr.d_step(tr.draws(s), do_r1=(s % 4 == 0))
        tr.opt_d.step()
        losses.append(logs["d_real"] + logs["d_fake"])
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    print(f"D loss {first:.3f} -> {last:.3f}")
    assert abs(first - 2 * np.log(2)) < 0.1 and last < 1.0
    assert max_diff(weights(tr.G), g0) == 0


def test_d_steps(kl_setup, tmp_path):
    """TrainConfig.d_steps = k: k D updates per iteration, the first on the iteration's own draws (so d_steps=1 is
    the official iteration), the extra ones on their own draws; resumable bit for bit; G still one step."""
    m, data = kl_setup
    base = dict(steps=4, batch_size=4, lazy_reg=2)
    one = GANTrainer(m, data, TrainConfig(**base), disc_config=TINY_D)
    two = GANTrainer(m, data, TrainConfig(**base, d_steps=2), disc_config=TINY_D)
    la, lb = one.train_step(), two.train_step()
    # the first D step sees the same pairs: its losses (logged) are the official iteration's
    assert lb["d_real"] == la["d_real"] and lb["d_fake"] == la["d_fake"] and lb["r1"] == la["r1"]
    step_count = lambda opt: int(next(iter(opt.state_dict()["state"].values()))["step"])
    assert step_count(two.opt_d) == 2 and step_count(one.opt_d) == 1 and step_count(two.opt_g) == 1
    assert max_diff(weights(one.D), weights(two.D)) > 1e-6  # the extra update moved D
    # the extra draws are new pairs, t and z (not a repeat of the iteration's)
    d0, d1 = two.draws(0), two.draws(0, extra=1)
    assert not torch.equal(d0["q1_d"], d1["q1_d"]) and not torch.equal(d0["z_d"], d1["z_d"])
    assert torch.equal(two.draws(0, extra=1)["q1_d"], d1["q1_d"])  # reproducible
    # resume: 2 + save + load + 2 == 4 straight
    a, c = run_straight_and_resumed(m, data, TrainConfig(**base, d_steps=3), 4, 2, tmp_path / "s.pt")
    for net in ("G", "D"):
        assert max_diff(weights(getattr(a, net)), weights(getattr(c, net))) == 0.0, net
    with pytest.raises(Exception, match="d_steps"):
        TrainConfig(d_steps=0)


def test_d_warmup(kl_setup, tmp_path):
    """TrainConfig.d_warmup = n: iterations 0..n-1 update D only (G, its EMA and G's optimizer untouched; G's
    losses still logged, equal to those of the same iteration without warm-up); from iteration n on, G trains and
    the EMA's warm-up counts from there. Resumable bit for bit; a negative value is refused."""
    m, data = kl_setup
    base = dict(steps=5, batch_size=4, lazy_reg=2, ema_warmup=True)
    plain = GANTrainer(m, data, TrainConfig(**base), disc_config=TINY_D)
    warm = GANTrainer(m, data, TrainConfig(**base, d_warmup=2), disc_config=TINY_D)
    g0, e0 = weights(warm.G), weights(warm.ema)
    lp, lw = plain.train_step(), warm.train_step()
    assert lw["g_adv"] == lp["g_adv"] and lw["rec"] == lp["rec"] and lw["d_real"] == lp["d_real"]
    assert max_diff(weights(warm.D), weights(plain.D)) == 0  # the D update is the same
    warm.train_step()
    assert max_diff(weights(warm.G), g0) == 0 and max_diff(weights(warm.ema), e0) == 0
    assert not warm.opt_g.state  # Adam never stepped
    assert max_diff(weights(warm.D), weights(plain.D)) > 1e-6  # D kept training
    warm.train_step()  # iteration 2: G's first update; the EMA's decay is its first (1/10), not the third
    g1 = weights(warm.G)
    assert max_diff(g1, g0) > 1e-6
    expect = {k: 0.1 * e0[k] + 0.9 * g1[k] for k in e0 if e0[k].is_floating_point()}
    assert max((weights(warm.ema)[k] - v).abs().max().item() for k, v in expect.items()) < 1e-6
    a, c = run_straight_and_resumed(m, data, TrainConfig(**base, d_warmup=2), 4, 1, tmp_path / "s.pt")
    for net in ("G", "D", "ema"):
        assert max_diff(weights(getattr(a, net)), weights(getattr(c, net))) == 0.0, net
    with pytest.raises(Exception, match="d_warmup"):
        TrainConfig(d_warmup=-1)


def test_rec_t_weights(kl_setup, tmp_path):
    """TrainConfig.rec_t_weights: per-step factors of the L1 term. All ones is the official loss (same update up to
    float rounding of the per-sample mean); all zeros removes the L1 gradient (the update equals rec_schedule off);
    a factor only at t = 0 changes the update; the wrong length or bad values are refused, naming the field."""
    m, data = kl_setup
    T = m.num_timesteps
    base = dict(steps=4, batch_size=4, lazy_reg=2, rec_schedule="constant", rec_value=4.0)

    def one_step(**kw):
        tr = GANTrainer(m, data, TrainConfig(**{**base, **kw}), disc_config=TINY_D)
        logs = tr.train_step()
        return weights(tr.G), logs, tr

    g_ref, l_ref, tr = one_step()
    g_ones, l_ones, _ = one_step(rec_t_weights=(1.0,) * T)
    assert l_ones["rec"] == pytest.approx(l_ref["rec"], rel=1e-5) and l_ref["rec"] > 0
    assert max_diff(g_ones, g_ref) < 1e-6
    g_off, _, _ = one_step(rec_schedule="off")
    g_zero, l_zero, _ = one_step(rec_t_weights=(0.0,) * T)
    assert l_zero["rec"] == 0.0 and max_diff(g_zero, g_off) < 1e-6 and max_diff(g_off, g_ref) > 1e-5
    t = tr.draws(0)["t_g"]
    first = tuple(1.0 if i == 0 else 0.0 for i in range(T))
    g_t0, l_t0, _ = one_step(rec_t_weights=first)
    assert (t == 0).any() and not (t == 0).all()  # the draw mixes t = 0 with other steps
    assert 0 < l_t0["rec"] < l_ref["rec"]
    assert max_diff(g_t0, g_ref) > 1e-5 and max_diff(g_t0, g_off) > 1e-5
    # round trip through the run's JSON record
    cfg = TrainConfig(**base, rec_t_weights=first)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception, match=f"rec_t_weights: expected one factor per diffusion step \\({T}"):
        GANTrainer(m, data, TrainConfig(**base, rec_t_weights=(1.0,) * (T + 1)), disc_config=TINY_D)
    # the rule: min(1, SNR of x_{t+1}) from the model's own schedule, for any T
    c = m.coefficients
    snr = [float(c.a_s_cum[k]) ** 2 / float(c.sigmas_cum[k]) ** 2 for k in range(1, T + 1)]
    rule = GANTrainer(m, data, TrainConfig(**base, rec_t_weights="min_snr"), disc_config=TINY_D)._rec_tw
    assert rule.tolist() == pytest.approx([min(1.0, v) for v in snr], rel=1e-6)
    assert rule[0] == 1.0 and all(rule[i + 1] < rule[i] for i in range(T - 1))  # less L1 as the noise grows
    cut = sorted(snr)[T // 2]  # "snr>=X": 1 where the SNR reaches X, 0 at the noisier steps
    step = GANTrainer(m, data, TrainConfig(**base, rec_t_weights=f"snr>={cut!r}"), disc_config=TINY_D)._rec_tw
    assert step.tolist() == [1.0 if v >= cut else 0.0 for v in snr] and 0 < step.sum() < T
    assert TrainConfig.from_dict(TrainConfig(rec_t_weights="snr>=0.05").to_dict()).rec_t_weights == "snr>=0.05"
    for bad in ((1.0, -1.0), (float("nan"),), (), [1.0], (True,), "snr", "snr>=x", "snr>=-1", "snr>=nan"):
        with pytest.raises(Exception, match="rec_t_weights"):
            TrainConfig(rec_t_weights=bad)


def test_image_discriminator(kl_setup, tmp_path):
    """TrainConfig.image_d_weight > 0: a PatchGAN on decoded x0 trains beside D. Off (0), the update is the plain
    one; on, the latent D's update is unchanged (same draws), G's update changes and the image D's weights move;
    its losses are logged; runs resume bit for bit (with augmentation too); a state without the image D is refused
    when it is on; a negative weight is refused."""
    m, data = kl_setup
    base = dict(steps=4, batch_size=4, lazy_reg=2, ema_warmup=True)
    plain = GANTrainer(m, data, TrainConfig(**base), disc_config=TINY_D)
    img = GANTrainer(m, data, TrainConfig(**base, image_d_weight=0.5), disc_config=TINY_D)
    assert plain.Di is None and img.Di is not None
    di0 = weights(img.Di)
    lp, li = plain.train_step(), img.train_step()
    assert li["d_real"] == lp["d_real"] and li["d_fake"] == lp["d_fake"] and li["g_adv"] == lp["g_adv"]
    assert max_diff(weights(img.D), weights(plain.D)) == 0.0  # the latent D's update does not depend on it
    assert max_diff(weights(img.G), weights(plain.G)) > 1e-7  # G's does
    assert max_diff(weights(img.Di), di0) > 1e-6
    for k in ("di_real", "di_fake", "gi_adv"):
        assert np.isfinite(li[k]) and li[k] > 0, k
    assert abs(li["di_real"] + li["di_fake"] - 2 * np.log(2)) < 0.5  # a fresh D is near chance
    zero = GANTrainer(m, data, TrainConfig(**base, image_d_weight=0.0), disc_config=TINY_D)
    zero.train_step()
    assert max_diff(weights(zero.G), weights(plain.G)) == 0.0
    for extra in ({}, {"d_augment": "translation,cutout", "augment_p": 0.5}):
        cfg = TrainConfig(**base, image_d_weight=0.5, **extra)
        a, c = run_straight_and_resumed(m, data, cfg, 4, 2, tmp_path / f"i{len(extra)}.pt")
        for net in ("G", "D", "Di", "ema"):
            assert max_diff(weights(getattr(a, net)), weights(getattr(c, net))) == 0.0, net
    plain_state = plain.state_dict()
    with pytest.raises(CheckpointError, match="image_d_weight"):
        GANTrainer(m, data, TrainConfig(**base, image_d_weight=0.5), disc_config=TINY_D).load_state_dict(plain_state)
    for bad in (-1.0, float("nan"), "on", True):
        with pytest.raises(Exception, match="image_d_weight"):
            TrainConfig(image_d_weight=bad)
    # "auto" (the fine-tune default): on for small images, off where decoding would dominate the iteration
    from lddgan_core.train.config import resolve_image_d_weight
    assert [resolve_image_d_weight("auto", s) for s in (32, 64, 128, 256)] == [1.0, 1.0, 0.0, 0.0]
    assert resolve_image_d_weight(0.5, 256) == 0.5
    auto = GANTrainer(m, data, TrainConfig(**base, image_d_weight="auto"), disc_config=TINY_D)
    assert m.config.image_size <= 64 and auto.image_d_weight == 1.0 and auto.Di is not None
    assert TrainConfig.from_dict(TrainConfig(image_d_weight="auto").to_dict()).image_d_weight == "auto"
