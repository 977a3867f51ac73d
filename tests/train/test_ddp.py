"""Data parallelism over torch.distributed with 2 CPU processes (gloo): ranks hold identical weights after N
iterations, and match one process with the same global batch (and micro-batch = per-process batch) within float
rounding. (One process without micro-batches differs by much more: D's minibatch-stddev feature groups samples
within a forward pass, so the split of the batch matters.)"""
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp

TINY_D = dict(kind="small", in_channels=8, ngf=8, t_emb_dim=16)
STEPS, BATCH, MICRO = 4, 8, 2
# measured: 1.1e-6 (G) / 3.5e-6 (D) / 1.5e-8 (EMA) after 4 iterations at lr 1e-3 (<0.4% of one Adam step):
# the all-reduce sums the two ranks' gradients in another order than one process accumulating micro-batches
TOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup():
    from conftest import tiny_config

    import lddgan_core as L
    from lddgan_core.train import TrainConfig, build_latents

    torch.manual_seed(0)
    m = L.LDDGAN(tiny_config("kl")).eval()
    g = torch.Generator().manual_seed(1)
    imgs = (torch.rand(6, 3, 1, 1, generator=g) * 1.6 - 0.8).expand(6, 3, 16, 16).clone()
    data = build_latents(m.autoencoder, 16, images=imgs)
    cfg = TrainConfig(steps=STEPS, batch_size=BATCH, micro_batch=MICRO, lazy_reg=2, lr_g=1e-3, lr_d=1e-3)
    return m, data, cfg


def worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from lddgan_core.train import GANTrainer
    from lddgan_core.train import dist as tdist

    w = tdist.init_from_env("cpu")
    assert (w.rank, w.size) == (rank, world) and dist.get_backend() == "gloo"
    m, data, cfg = setup()
    if rank == 1:  # a different start on rank 1: the broadcast from rank 0 must overwrite it
        with torch.no_grad():
            m.generator.conv_out.bias.add_(1.0)
    tr = GANTrainer(m, data, cfg, disc_config=TINY_D, world=w)
    for _ in range(STEPS):
        tr.train_step()
    torch.save({"G": tr.G.state_dict(), "D": tr.D.state_dict(), "ema": tr.ema.state_dict()},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_in_sync_and_equal_to_one(tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
        from lddgan_core.train import GANTrainer

        m, data, cfg = setup()
        single = GANTrainer(m, data, cfg, disc_config=TINY_D)
        for _ in range(STEPS):
            single.train_step()
        # without micro-batches of the per-process size, D's minibatch-stddev groups other samples together
        whole = GANTrainer(m, data, type(cfg)(**{**cfg.to_dict(), "micro_batch": None}), disc_config=TINY_D)
        for _ in range(STEPS):
            whole.train_step()
    finally:
        torch.set_num_threads(n)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("G", "D", "ema"):
        assert max_diff(r0[net], r1[net]) == 0.0, f"{net}: ranks out of sync"
        d = max_diff(r0[net], getattr(single, net).state_dict())
        print(f"{net}: 2 processes vs 1, max |dw| = {d:.2e}")
        assert d < TOL
    d_whole = max_diff(r0["D"], whole.D.state_dict())
    print(f"D: 2 processes vs 1 process without micro-batches, max |dw| = {d_whole:.2e}")
    assert d_whole > 10 * TOL
    start = {k: v for k, v in m.generator.state_dict().items()}
    assert max_diff(r0["G"], start) > 10 * TOL  # 4 Adam steps of 1e-3 moved the weights well beyond the tolerance


def test_cli_under_torchrun(tmp_path):
    """`python -m torch.distributed.run --nproc_per_node 2 -m lddgan_core finetune ...` trains data-parallel;
    its model equals the single-process command with --micro-batch = per-process batch (within TOL)."""
    import numpy as np
    from PIL import Image
    from conftest import REPO, tiny_config

    import lddgan_core as L

    torch.manual_seed(0)
    model = L.LDDGAN(tiny_config("kl")).save(tmp_path / "base.safetensors")
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        rgb = (np.zeros((16, 16, 3)) + rng.integers(0, 255, 3)).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "imgs" / f"{i}.png")
    common = ["-m", "lddgan_core", "finetune", "--model", str(model), "--data", str(tmp_path / "imgs"), "--steps", "3",
              "--batch", "4", "--micro-batch", "2", "--sample-every", "0", "--save-every", "0", "--device", "cpu",
              "--disc-config", '{"kind": "small", "ngf": 8, "t_emb_dim": 16}']
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), *common, "--out", str(tmp_path / "ddp")], env=env, capture_output=True,
                         text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "data parallel: 2 processes (gloo), batch 4 = 2 x 2" in ddp.stderr
    assert "the 2 processes hold identical weights (max difference 0)" in ddp.stderr
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one"), "-q"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = L.load(tmp_path / "ddp" / "model.safetensors"), L.load(tmp_path / "one" / "model.safetensors")
    d = max_diff(a.generator.state_dict(), b.generator.state_dict())
    print(f"torchrun 2 processes vs 1: max |dw| = {d:.2e}")
    assert d < TOL
