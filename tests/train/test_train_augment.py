"""Trainer features for quality and few-image fine-tuning: differentiable augmentation of D's inputs with an
adaptive probability, micro-batches that do not change D's minibatch-stddev groups, schedules that continue
smoothly when a run is extended, and CPU bf16 autocast checked against fp32."""
import math

import pytest
import torch

from lddgan_core.errors import ConfigError
from lddgan_core.train import GANTrainer, TrainConfig, build_latents, load_state, rec_weight, save_state
from lddgan_core.train import diffaug
from lddgan_core.train.trainer import stddev_group_order

TINY_D = dict(kind="small", in_channels=8, ngf=8, t_emb_dim=16)

pytestmark = pytest.mark.usefixtures("one_thread")


def colour_squares(n=16, seed=0):
    cols = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8
    return cols.expand(n, 3, 16, 16).clone()


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture
def kl_setup(random_model):
    m = random_model("kl")
    return m, build_latents(m.autoencoder, 16, images=colour_squares(6))


# -- augmentation ops ------------------------------------------------------------------------------------------
def test_policy_parsing():
    assert diffaug.parse_policy("off") == () and diffaug.parse_policy(None) == () and diffaug.parse_policy("") == ()
    assert diffaug.parse_policy("cutout, translation") == ("translation", "cutout")  # canonical order
    for bad in ("rotate", "flip,flip", 3):
        with pytest.raises(ConfigError):
            diffaug.parse_policy(bad)
    with pytest.raises(ConfigError, match="d_augment"):
        TrainConfig(d_augment="zoom")
    with pytest.raises(ConfigError, match="augment_p"):
        TrainConfig(augment_p=1.5)


def test_ops_transform_both_states_alike_and_pass_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 8, 8, requires_grad=True)
    y = 2 * x.detach() + 1
    prm = diffaug.draw_params(diffaug.OPS, 1.0, 6, (8, 8), g)
    a, b = diffaug.apply_pair(x, y, prm, spread=0.5)
    # one transformation per pair: the relation y = 2x + 1 survives every op but the affine colour op, which maps
    # both through the same per-sample affine map, so b - 2a is constant over the pixels of each sample/channel
    # where nothing was cut out
    assert a.shape == x.shape and b.shape == y.shape
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # p = 0: the identity
    prm0 = diffaug.draw_params(diffaug.OPS, 0.0, 6, (8, 8), torch.Generator().manual_seed(0))
    a0, b0 = diffaug.apply_pair(x, y, prm0)
    assert torch.equal(a0, x) and torch.equal(b0, y)


def test_translation_and_flip_move_pixels_exactly():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = diffaug._translate(x, torch.tensor([[1, 0], [0, -1]]))
    assert torch.equal(out[0, 0, 1:], x[0, 0, :-1]) and torch.equal(out[0, 0, 0], torch.zeros(4))  # down by one
    assert torch.equal(out[1, 0, :, :-1], x[1, 0, :, 1:]) and torch.equal(out[1, 0, :, -1], torch.zeros(4))  # left
    prm = {"flip": torch.tensor([True, False])}
    a, _ = diffaug.apply_pair(x, x, prm)
    assert torch.equal(a[0], x[0].flip(2)) and torch.equal(a[1], x[1])


def test_cutout_zeroes_half_the_side_in_both():
    g = torch.Generator().manual_seed(3)
    prm = diffaug.draw_params(("cutout",), 1.0, 8, (8, 8), g)
    a, b = diffaug.apply_pair(torch.ones(8, 2, 8, 8), torch.full((8, 2, 8, 8), 3.0), prm)
    assert torch.equal(a == 0, b == 0)
    zeros = (a[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.min() >= 4 and zeros.max() <= 16  # a 4x4 square, clipped at the border


def test_random_stream_does_not_depend_on_p():
    p1 = diffaug.draw_params(diffaug.OPS, 0.2, 5, (8, 8), torch.Generator().manual_seed(1))
    p2 = diffaug.draw_params(diffaug.OPS, 0.9, 5, (8, 8), torch.Generator().manual_seed(1))
    # same draws, only which rows apply differs: where both apply a translation, the shift is the same
    both = (p1["translation"].abs().sum(1) > 0) & (p2["translation"].abs().sum(1) > 0)
    assert torch.equal(p1["translation"][both], p2["translation"][both])


def test_adaptive_p_follows_the_overfitting_signal():
    ada = diffaug.AdaptiveP(0.0, target=0.6, kimg=0.1, interval=2)  # 100 images move p by 1
    for step in range(8):  # D sure of every real pair: r = 1 > 0.6, p rises by 2*10/100 per update
        ada.observe(torch.ones(10, 1))
        ada.update(step, batch=10)
    assert ada.p == pytest.approx(0.8) and ada.last_r == 1.0  # 4 updates of +0.2, capped at P_MAX
    for step in range(8, 12):  # D at chance on reals: r = -1 < 0.6, p falls
        ada.observe(-torch.ones(10, 1))
        ada.update(step, batch=10)
    assert ada.p == pytest.approx(0.4)
    fixed = diffaug.AdaptiveP(0.3, target=0.0, kimg=0.1)
    fixed.observe(torch.ones(4, 1))
    fixed.update(3, batch=4)
    assert fixed.p == 0.3


# -- the trainer with augmentation -----------------------------------------------------------------------------
def test_trainer_augmentation_adapts_and_resumes_exactly(kl_setup, tmp_path):
    m, data = kl_setup
    cfg = TrainConfig(steps=8, batch_size=4, lazy_reg=2, d_augment="translation,cutout,flip,color", augment_p=0.2,
                      ada_target=0.01, ada_kimg=0.05, ada_interval=2, lr_d=1e-3)
    a = GANTrainer(m, data, cfg, disc_config=TINY_D)
    ps = []
    for _ in range(8):
        ps.append(a.train_step()["aug_p"])
    assert len(set(ps)) > 1, ps  # p moved
    b = GANTrainer(m, data, cfg, disc_config=TINY_D)
    for _ in range(4):
        b.train_step()
    save_state(str(tmp_path / "s.pt"), b.state_dict())
    c = GANTrainer(m, data, cfg, disc_config=TINY_D)
    c.load_state_dict(load_state(str(tmp_path / "s.pt")))
    assert c.ada.p == b.ada.p
    for _ in range(4):
        c.train_step()
    for net in ("G", "D", "ema"):
        assert max_diff(weights(getattr(a, net)), weights(getattr(c, net))) == 0.0, net
    # augmentation changes training, and off means off: the un-augmented run differs
    off = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "d_augment": "off"}), disc_config=TINY_D)
    for _ in range(8):
        off.train_step()
    assert max_diff(weights(a.D), weights(off.D)) > 1e-6


def test_augmentation_at_p0_equals_no_augmentation(kl_setup):
    """The augmentation draws use their own random stream, so p = 0 trains exactly like 'off'."""
    m, data = kl_setup
    base = TrainConfig(steps=3, batch_size=4, lazy_reg=2)
    a = GANTrainer(m, data, base, disc_config=TINY_D)
    b = GANTrainer(m, data, TrainConfig(**{**base.to_dict(), "d_augment": "translation,cutout", "augment_p": 0.0}),
                   disc_config=TINY_D)
    for _ in range(3):
        a.train_step()
        b.train_step()
    for net in ("G", "D"):
        assert max_diff(weights(getattr(a, net)), weights(getattr(b, net))) < 1e-6, net


# -- micro-batches and minibatch-stddev groups -----------------------------------------------------------------
def test_stddev_group_order_keeps_the_full_batch_groups():
    B, M, G = 16, 8, 4
    order = stddev_group_order(B, M)
    assert sorted(order.tolist()) == list(range(B))
    full = {frozenset(j + i * (B // G) for i in range(G)) for j in range(B // G)}  # groups of the whole batch
    chunks = set()
    for k in range(B // M):
        rows = order[k * M:(k + 1) * M]
        chunks |= {frozenset(rows[j + i * (M // G)].item() for i in range(G)) for j in range(M // G)}
    assert chunks == full
    assert stddev_group_order(8, 8) is None and stddev_group_order(8, 2) is None  # one chunk / chunk < group


def _grads(net):
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


def test_micro_batches_no_longer_change_the_step(kl_setup):
    """Batch 8 as 2 micro-batches of 4 gives the gradients of batch 8 at once, within float rounding. (Comparing
    weights after an Adam step would not do: Adam's first step turns rounding noise in near-zero gradients into
    updates of the size of the learning rate.)"""
    m, data = kl_setup
    cfg = TrainConfig(steps=2, batch_size=8, lazy_reg=1, lr_g=1e-3, lr_d=1e-3)
    rel = {}
    for reorder in (True, False):
        whole = GANTrainer(m, data, cfg, disc_config=TINY_D)
        split = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "micro_batch": 4}), disc_config=TINY_D)
        if not reorder:
            split._order = None  # the old behaviour: micro-batches of consecutive rows
        d = whole.draws(0)
        logs = [t.d_step(d, do_r1=True) for t in (whole, split)]
        for t in (whole, split):
            t.g_step(d, w=0.5)
        rel[reorder] = {net: float((_grads(getattr(whole, net)) - _grads(getattr(split, net))).norm()
                                   / _grads(getattr(whole, net)).norm()) for net in ("D", "G")}
        if reorder:
            for k in ("d_real", "d_fake"):
                assert float(logs[1][k]) == pytest.approx(float(logs[0][k]), rel=1e-6), k
    assert rel[True]["D"] < 1e-5 and rel[True]["G"] < 1e-5, rel  # measured 7e-7
    assert rel[False]["D"] > 1e-3, rel  # consecutive micro-batches regroup the samples (measured 8%)


# -- extending a finished run ----------------------------------------------------------------------------------
def test_extending_a_run_continues_the_schedules(kl_setup, tmp_path):
    m, data = kl_setup
    cfg = TrainConfig(steps=6, batch_size=4, lazy_reg=2, lr_schedule="cosine", lr_g=1e-3, min_lr=1e-5)
    a = GANTrainer(m, data, cfg, disc_config=TINY_D)
    last = [a.train_step() for _ in range(6)][-1]
    assert last["w"] == pytest.approx(rec_weight(1.0))
    save_state(str(tmp_path / "s.pt"), a.state_dict())
    longer = TrainConfig(**{**cfg.to_dict(), "steps": 12})
    b = GANTrainer(m, data, longer, disc_config=TINY_D)
    b.load_state_dict(load_state(str(tmp_path / "s.pt")))
    assert b.cfg.schedule_steps == 6
    rows = [b.train_step() for _ in range(6)]
    # the weight and the LR stay at the end of their curves (they used to restart at w 0.367)
    assert all(r["w"] == pytest.approx(last["w"]) for r in rows)
    assert all(r["lr_g"] == pytest.approx(last["lr_g"]) for r in rows)
    # and the extended run resumes again with its schedule length recorded
    save_state(str(tmp_path / "s2.pt"), b.state_dict())
    c = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "steps": 20}), disc_config=TINY_D)
    c.load_state_dict(load_state(str(tmp_path / "s2.pt")))
    assert c.cfg.schedule_steps == 6 and c.step == 12
    # an explicit, different schedule length is a change of the optimisation: refused
    d = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "steps": 12, "schedule_steps": 12}), disc_config=TINY_D)
    with pytest.raises(Exception, match="schedule_steps"):
        d.load_state_dict(load_state(str(tmp_path / "s.pt")))


# -- CPU bf16 autocast against fp32 ------------------------------------------------------------------------------
BF16_LOSS_RTOL = 0.05  # bf16 keeps 8 bits of mantissa: losses agree to a few per cent
BF16_UPDATE_RTOL = 0.15  # one Adam step's weight update: relative L2 error of the update vector


def test_cpu_bf16_step_close_to_fp32(kl_setup):
    m, data = kl_setup
    cfg = TrainConfig(steps=2, batch_size=8, lazy_reg=1, lr_g=1e-3, lr_d=1e-3, precision="fp32")
    ref = GANTrainer(m, data, cfg, disc_config=TINY_D)
    bf = GANTrainer(m, data, TrainConfig(**{**cfg.to_dict(), "precision": "bf16"}), disc_config=TINY_D)
    g0, d0 = weights(ref.G), weights(ref.D)
    lr, lb = ref.train_step(), bf.train_step()
    for k in ("d_real", "d_fake", "g_adv", "rec"):
        assert lb[k] == pytest.approx(lr[k], rel=BF16_LOSS_RTOL), k
    for start, net in ((g0, "G"), (d0, "D")):
        wr, wb = weights(getattr(ref, net)), weights(getattr(bf, net))
        du_r = torch.cat([(wr[k] - start[k]).flatten() for k in start if start[k].is_floating_point()])
        du_b = torch.cat([(wb[k] - start[k]).flatten() for k in start if start[k].is_floating_point()])
        rel = float((du_b - du_r).norm() / du_r.norm())
        assert math.isfinite(rel) and rel < BF16_UPDATE_RTOL, (net, rel)
