"""segros.shard: with one process every helper is the identity; with two (gloo, spawned here) the
rows each process draws and the means each computes make up what one process computes on the whole
batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segros import shard
from segros.objectives import DiffusionSchedule, diffusion_mse, i2t_nll, masked_token_nll
from segros.supervision import perturb, random_scores, sample_gamma

B, N, C, V = 6, 5, 3, 7


def inputs():
    g = torch.Generator().manual_seed(0)
    return {"m": torch.rand(B, N, generator=g), "w": (torch.rand(B, N, generator=g) > 0.4).float(),
            "z0": torch.randn(B, N, C, generator=g), "cond": torch.randn(B, N, C, generator=g),
            "logits": torch.randn(B, N, V, generator=g), "targets": torch.randint(0, V, (B, N), generator=g),
            "labels": torch.where(torch.rand(B, N, generator=g) > 0.5, torch.randint(0, V, (B, N), generator=g), -100)}


def predictor(x_t, t, c):
    return x_t * 0.5 + c * 0.25 + t[:, None].float() / 1000


def compute(rows):
    """Every sharded quantity on ``rows`` of the inputs, drawn from generators seeded alike."""
    x = {k: v[rows] for k, v in inputs().items()}
    g = torch.Generator().manual_seed(1)
    out = {"gamma": sample_gamma("uniform", len(range(B)[rows]), per="sample", generator=g),
           "gamma_batch": torch.tensor([sample_gamma("uniform", 2, per="batch", generator=g)]),
           "scores": random_scores(x["m"].shape[0], N, g, "cpu"),
           "xi": perturb(x["m"], 0.5, generator=g)}
    out["diffusion"] = diffusion_mse(predictor, x["z0"], x["cond"], x["w"], DiffusionSchedule(), num_samples=2,
                                     generator=g)
    out["nll"] = masked_token_nll(x["logits"], x["targets"], x["w"])
    out["i2t"] = i2t_nll(x["logits"], x["labels"])
    return out


def worker(rank, world, init_file, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    lo, hi = (0, 2) if rank == 0 else (2, B)  # unequal shares on purpose
    with shard.use(rank, world):
        out = compute(slice(lo, hi))
    queue.put((rank, {k: v.detach().numpy().copy() for k, v in out.items()}))  # by value, not a shared tensor
    dist.barrier()
    dist.destroy_process_group()


def test_one_process_is_the_identity():
    assert not shard.active() and shard.rows(5) == (0, 5) and shard.gather_objects([1, 2]) == [1, 2]
    x = torch.arange(4)
    assert shard.local_rows(x, 4) is x and shard.all_sum(x) is x
    with shard.use(0, 1):
        assert not shard.active()
    with pytest.raises(ValueError, match="not a process"):
        with shard.use(2, 2):
            pass


def test_two_processes_make_up_the_whole_batch(tmp_path):
    whole = compute(slice(0, B))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, 2, str(tmp_path / "init"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    parts = {r: {k: torch.from_numpy(v) for k, v in out.items()} for r, out in (queue.get(timeout=300) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key in ("gamma", "scores", "xi"):  # rows drawn for the whole batch, sliced
        assert torch.equal(torch.cat([parts[0][key], parts[1][key]]), whole[key]), key
    assert torch.equal(parts[0]["gamma_batch"], whole["gamma_batch"])  # one γ for the batch, the same everywhere
    assert torch.equal(parts[1]["gamma_batch"], whole["gamma_batch"])
    for key in ("diffusion", "nll", "i2t"):  # shares whose mean is the whole batch's mean
        mean = (parts[0][key] + parts[1][key]) / 2
        assert torch.allclose(mean, whole[key], rtol=1e-6, atol=0), (key, mean, whole[key])

