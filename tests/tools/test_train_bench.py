"""The training benchmark (`bench --train`) and the CUDA suite command (`bench --gpu-suite`), at toy sizes on the
CPU: they run the real trainer and report what they claim to."""
import json

import pytest
import torch

from lddgan_core.tools import gpu_suite, train_bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_bench_rows(tmp_path, capsys):
    out = tmp_path / "tb.json"
    rc = train_bench.main(["--arch", "recipe", "--batch", "4", "--threads", "1", "--blocks", "1", "--no-memory",
                           "--settings", "fast", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == ["fp32", "fast"]  # fp32 is always measured next to the others
    fp32, fast = rows
    assert fp32["speedup"] == 1.0 and fast["speedup"] == pytest.approx(fast["it_per_s"] / fp32["it_per_s"])
    for r in rows:
        assert r["it_per_s"] > 0 and r["images_per_s"] == pytest.approx(4 * r["it_per_s"])
        assert len(r["s_per_it"]) == 1
    assert "| recipe | 4 | cpu | 1 | fast |" in capsys.readouterr().out
    assert fast["gflop_per_it"] == fp32["gflop_per_it"] > 0 and fast["tflops"] > 0


def test_train_bench_recipe_is_the_recipe():
    """The recipe row trains as the default-model recipe does: its learning rates, R1, D updates per iteration and
    EMA warm-up (a bench with one D update would time a third of the recipe's D work)."""
    from lddgan_core.tools.recipes import SHAPES_GAN

    cfg = train_bench.make_trainer("recipe", 4, "fp32").cfg
    for field in ("lr_g", "lr_d", "r1_gamma", "lazy_reg", "ema_decay", "d_steps", "ema_warmup"):
        assert getattr(cfg, field) == getattr(SHAPES_GAN, field), field
    assert SHAPES_GAN.d_steps == 3


def test_train_bench_settings_match_fp32():
    """The fast setting (fused Adam, FIR as strided convs) runs the same iteration: losses equal to float rounding."""
    a = train_bench.make_trainer("recipe", 4, "fp32")
    b = train_bench.make_trainer("recipe", 4, "fast")
    la, lb = a.train_step(), b.train_step()
    for k in ("d_real", "d_fake", "g_adv", "rec"):
        assert lb[k] == pytest.approx(la[k], rel=1e-4), k


def test_train_bench_rejects_unknown_names(capsys):
    assert train_bench.main(["--arch", "nope"]) == 2
    assert "unknown" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_suite_without_cuda_says_so(tmp_path, capsys):
    assert gpu_suite.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and "--allow-cpu" in err
    assert not any(tmp_path.iterdir())


def test_gpu_suite_commands_and_short_run(tmp_path):
    cmds = gpu_suite._commands(str(tmp_path), "cuda", tiny=False)
    assert list(cmds) == ["tests", "inference", "train", "run"]
    assert "--train" in cmds["train"] and "100" in cmds["inference"] and "cuda" in cmds["tests"]
    assert sum(gpu_suite.BUDGET.values()) <= 8 * 60 - 30
    res = gpu_suite.short_run("cpu", steps=3, batch=4, images=32, json_path=str(tmp_path / "run.json"))
    assert res["it_per_s"] > 0 and res["last"]["step"] == 3
    assert json.loads((tmp_path / "run.json").read_text())["steps"] == 3


def _grads(net):
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


def test_fast_training_ops_give_the_reference_gradients():
    """TrainConfig.fast builds G and D with the strided-conv FIR (and SDPA): one D step (with R1, a double
    backward) and one G step give the reference's gradients to float rounding."""
    a = train_bench.make_trainer("recipe", 4, "fp32")
    b = train_bench.make_trainer("recipe", 4, "fast")
    assert b.G.impl.fir_conv and b.D.impl.fir_conv and not a.D.impl.fir_conv
    d = a.draws(0)
    for t in (a, b):
        t.d_step(d, do_r1=True)
        t.g_step(d, w=0.5)
    for net in ("D", "G"):
        ga, gb = _grads(getattr(a, net)), _grads(getattr(b, net))
        assert float((ga - gb).norm() / ga.norm()) < 1e-5, net
