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



# ---- a hinted step (caption-and-hints dropout) split over two processes ------------------------------

FAMILIES = ("tiny-showo", "tiny-harmon", "harmon", "showo")
STEP_SEEDS = range(6)


def build_family(family):
    from segros.backbones.registry import build_backbone
    from segros.data.tokenizer import tiny_tokenizer

    torch.manual_seed(0)
    if family.startswith("tiny-"):  # p = 0.5, so that over 4 rows some processes hold no dropped row
        return build_backbone(family, cfg_drop_prob=0.5, n_fit=32)
    from segros.backbones.harmon import build_harmon
    from segros.backbones.showo import build_showo
    if family == "showo":
        return build_showo("tiny", cond_dropout_prob=0.5)
    m = build_harmon("tiny", tokenizer=tiny_tokenizer(), cond_dropout_prob=0.5)
    # MAR's dropouts (0.1, the official config) draw a mask per element: no split of a batch over
    # processes reproduces them (equal in distribution only, docs/data.md), so they are off here
    for module in m.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attn_drop"):
            module.attn_drop = 0.0
    return m


def hinted_steps(family, rows):
    """Per step seed: the SeGroS step's loss and gradient on ``rows`` of a 4-row batch, and whether a
    stand-in row ran (:func:`segros.shard.stand_in`)."""
    from segros.presets import TrainConfig
    from segros.train.steps import t2i_step

    m = build_family(family).train()
    batch = m.tokenize_prompts(["a red circle", "two blue squares left of a green cross", "a star", "a cross"])
    batch["pixels"] = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = {k: v[rows] for k, v in batch.items()}
    cfg = TrainConfig(method="segros", backbone=family)
    used, real = [], shard.stand_in

    def spy(on=True):
        used.append(bool(on) and shard.active())
        return real(on)

    shard.stand_in = spy
    out = []
    try:
        for seed in STEP_SEEDS:
            used.clear()
            m.zero_grad()
            torch.manual_seed(100 + seed)  # the tiny families' own dropout draws from the global generator
            loss, _, _ = t2i_step(m, batch, cfg, torch.Generator().manual_seed(seed))
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
            out.append((loss.detach().numpy().copy(), grad.numpy().copy(), any(used)))
    finally:
        shard.stand_in = real
    return out


def hinted_worker(rank, world, init_file, queue, family):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    with shard.use(rank, world):
        out = hinted_steps(family, slice(2 * rank, 2 * rank + 2))
    queue.put((rank, out))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("family", FAMILIES)
def test_two_processes_make_up_a_hinted_step_with_stand_in_rows(tmp_path, family):
    """Caption-and-hints dropout splits a micro-batch into dropped and kept sub-batches; split over two
    processes (2 rows each) the dropped rows are drawn for the global batch, a process without rows of
    one sub-batch runs it on a stand-in row of weight 0, and the mean of the two processes' losses and
    gradients (what DDP averages) is the one-process step on all 4 rows."""
    torch.set_num_threads(1)
    whole = hinted_steps(family, slice(0, 4))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=hinted_worker, args=(r, 2, str(tmp_path / "init"), queue, family)) for r in range(2)]
    for p in procs:
        p.start()
    parts = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert any(used for part in parts.values() for _, _, used in part), "no step seed left a process without a sub-batch"
    for k, (loss, grad, _) in enumerate(whole):
        mean_loss = (parts[0][k][0] + parts[1][k][0]) / 2
        mean_grad = (parts[0][k][1] + parts[1][k][1]) / 2
        assert abs(mean_loss - loss) <= 1e-5 * abs(loss), (family, k, mean_loss, loss)
        assert abs(mean_grad - grad).max() <= 1e-5 * abs(grad).max() + 1e-8, (family, k)
