"""Cost of building SeGroS supervision beside one training step of the LLM (CPU).

Times ground (Eqs. 3–11) + perturb (Eq. 12) + build_supervision (§3.4) at the Harmon-0.5B and
Harmon-1.5B shapes, and one forward + backward of a 2-layer Qwen2ForCausalLM (random weights, the
Qwen2.5 width / heads / intermediate size of that shape) over the sequence a SeGroS step feeds the
LLM: L text + ⌊0.3N⌋ hints + N corrupted-image tokens. The LLM runs at a small batch (CPU memory and
time) and its time is scaled linearly to the full batch; its vocabulary is tiny and it is fed
``inputs_embeds`` with a mean-squared loss on the last hidden state, so embedding and LM-head cost
are left out. The 24- and 28-layer steps are extrapolated as (layers / 2) × the 2-layer time,
which leaves out the vision encoder, diffusion head and optimizer: the step estimate is a lower
bound, so the SeGroS share is an upper bound.

    .venv/bin/python benchmarks/bench_grounding.py            # full shapes (~2–3 min on 2 cores)
    .venv/bin/python benchmarks/bench_grounding.py --quick    # smaller, seconds

Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from segros.grounding import ground  # noqa: E402
from segros.supervision import build_supervision, perturb, sample_gamma  # noqa: E402

# (name, B, L, N, D, heads, kv heads, intermediate) — Qwen2.5-0.5B and -1.5B widths
SHAPES = [
    ("Harmon-0.5B", 96, 128, 1024, 896, 14, 2, 4864),
    ("Harmon-1.5B", 48, 128, 1024, 1536, 12, 2, 8960),
]


def best_time(fn, repeats):
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def segros_step(B, L, N, D, generator):
    """Inputs for one SeGroS construction, and the construction as a closure."""
    z_text = torch.randn(B, L, D, generator=generator)
    z_image = torch.randn(B, N, D, generator=generator)
    lengths = torch.randint(8, L + 1, (B,), generator=generator)
    valid = torch.arange(L)[None, :] < lengths[:, None]
    valid[:, 0] = False  # [BOS]

    def run():
        with torch.no_grad():
            g = ground(z_text, z_image, valid, rho=0.4, tau=1.0)
            m_tilde = perturb(g.m_bar, 0.5, generator)
            gamma = sample_gamma("truncnorm", B, "batch", generator)
            return build_supervision(m_tilde, eta=0.3, gamma=gamma)

    return run


def llm_step(batch, seq, D, heads, kv_heads, inter, layers=2):
    """One forward + backward of a random `layers`-layer Qwen2 over [batch, seq] embeddings."""
    config = Qwen2Config(hidden_size=D, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=64,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).train()
    x = torch.randn(batch, seq, D)

    def run():
        model.zero_grad(set_to_none=True)
        out = model.model(inputs_embeds=x)
        loss = out.last_hidden_state.float().pow(2).mean()
        loss.backward()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quarter batch, 1 repeat, smaller LLM batch")
    parser.add_argument("--llm-batch", type=int, default=1, help="batch of the timed LLM step")
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    repeats = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU\n")
    print("| shape | B | L | N | D | SeGroS build (s) | LLM seq | LLM batch timed | 2-layer fwd+bwd, scaled to B (s) "
          "| SeGroS / 2-layer step | SeGroS / 24-layer step | SeGroS / 28-layer step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, B, L, N, D, heads, kv, inter in SHAPES:
        if args.quick:
            B = max(1, B // 4)
        seq = L + int(0.3 * N) + N
        t_segros = best_time(segros_step(B, L, N, D, generator), repeats)
        llm_batch = args.llm_batch
        if args.quick:
            seq_llm = seq // 2
        else:
            seq_llm = seq
        t_llm = best_time(llm_step(llm_batch, seq_llm, D, heads, kv, inter), 1) * B / llm_batch
        if args.quick:
            t_llm *= seq / seq_llm  # rough: linear in sequence length
        step24, step28 = t_llm * 24 / 2, t_llm * 28 / 2
        print(f"| {name} | {B} | {L} | {N} | {D} | {t_segros:.3f} | {seq} | {llm_batch}"
              f"{' (half seq)' if args.quick else ''} | {t_llm:.1f} | {100 * t_segros / t_llm:.3f}% "
              f"| {100 * t_segros / step24:.4f}% | {100 * t_segros / step28:.4f}% |")
    print("\nLLM time = one forward+backward at the timed batch × (B / timed batch); 24/28-layer steps "
          "= (layers / 2) × the 2-layer time (embeddings, LM head, vision encoder, optimizer left out).")


if __name__ == "__main__":
    main()
