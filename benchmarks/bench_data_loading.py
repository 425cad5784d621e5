"""Data-loading throughput against the GPU's appetite (docs/data.md, "Throughput").

Writes ``--n`` real-size JPEGs (``--size`` px, photo-like: smooth colour fields, edges and grain,
about 0.2 MB each at quality 90) twice, as a webdataset tar folder (``jpg`` + ``txt``, 4 shards) and
as a parquet folder (``image`` / ``prompt`` / ``llava``, the MidjourneyV6 layout), opens each with
:func:`segros.data.sources.open_t2i` and reads them through :func:`segros.data.sources.make_loader`
with 1, 2, ... DataLoader workers (``--workers``), decoding and preprocessing to ``--target`` px with
the real adapters' own function (:func:`segros.backbones.inputs.resize_to_pixels`, what Harmon's and
OpenUni's ``preprocess_images`` call at 512 px). It prints images/s in all and per worker.

Next to it, the estimated demand of one GPU: the FLOP table's model FLOPs of one micro-step
(``--tflop``, default Harmon-0.5B's SeGroS micro-step, 881 TFLOP, README) at an assumed sustained
``--sustained`` TFLOP/s (default 400, about 40% of an H100's 989 dense bf16 peak): the micro-step time
and the images it consumes (``--micro`` T2I images + as many I2T images where λ = 1), hence the images/s
and the workers per GPU that loading needs. The demand is an estimate until a GPU measures the step.

    python benchmarks/bench_data_loading.py                       # 512 JPEGs of 1024 px, 1 and 2 workers
    python benchmarks/bench_data_loading.py --n 16 --size 96 --target 64 --workers 1   # seconds (tested)
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import resource
import shutil
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def photo_like(i: int, size: int) -> np.ndarray:
    """A deterministic [size, size, 3] uint8 image that JPEG-compresses like a photo."""
    rng = np.random.default_rng(i)
    small = rng.random((9, 9, 3))
    ys = np.linspace(0, 8, size)
    y0 = np.clip(ys.astype(int), 0, 7)
    t = (ys - y0)[:, None]
    rows = small[y0] * (1 - t[..., None]) + small[y0 + 1] * t[..., None]          # [size, 9, 3]
    x0 = np.clip(ys.astype(int), 0, 7)
    u = (ys - x0)[None, :, None]
    img = rows[:, x0] * (1 - u) + rows[:, x0 + 1] * u                            # [size, size, 3]
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(6):  # a few hard-edged shapes
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 16, size // 4))]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
    img = img * 255 + rng.normal(0, 6, img.shape)  # sensor grain
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(i: int, size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo_like(i, size)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def caption(i: int) -> str:
    return f"a photo number {i} of coloured discs on a smooth background"


def write_webdataset(folder: str, images: list[bytes], shards: int = 4) -> str:
    os.makedirs(folder, exist_ok=True)
    per = -(-len(images) // shards)
    for s in range(shards):
        with tarfile.open(os.path.join(folder, f"{s:05d}.tar"), "w") as tf:
            for i in range(s * per, min(len(images), (s + 1) * per)):
                for name, data in ((f"{i:08d}.jpg", images[i]), (f"{i:08d}.txt", caption(i).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return os.path.join(folder, "*.tar")


def write_parquet(folder: str, images: list[bytes]) -> str:
    import datasets

    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "prompt": datasets.Value("string"),
                                  "llava": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images],
                                     "prompt": [caption(i) for i in range(len(images))],
                                     "llava": [caption(i) + ", described at length" for i in range(len(images))]},
                                    features=features)
    ds.to_parquet(os.path.join(folder, "data", "train-00000-of-00001.parquet"))
    return folder


def _cpu_seconds(workers: int) -> float:
    """CPU seconds so far of this process (workers = 0) or of its finished children (the workers)."""
    if workers == 0:
        return time.process_time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def throughput(source, target: int, workers: int, batch: int) -> tuple[float, float]:
    """(images/s through make_loader over every full batch after one warm-up batch, CPU ms per image
    of the decoding processes over all batches). The CPU time does not depend on what else the
    machine runs; the wall-clock rate does."""
    from segros.backbones.inputs import resize_to_pixels
    from segros.data.sources import make_loader

    steps = len(source) // batch
    cpu0 = _cpu_seconds(workers)
    loader = make_loader(source, functools.partial(resize_to_pixels, size=target), batch_size=batch, seed=0,
                         stop=steps, num_workers=workers, prefetch_factor=2)
    it = iter(loader)
    first = next(it)["pixels"].shape[0]  # workers started, first batch decoded
    t0, n = time.perf_counter(), 0
    for raw in it:
        n += raw["pixels"].shape[0]
    dt = time.perf_counter() - t0
    del it, loader, raw
    gc.collect()  # shuts the persistent workers down, so that their CPU time is counted
    cpu = _cpu_seconds(workers) - cpu0
    return (n / dt if n else float("nan")), 1000 * cpu / (n + first)


def demand(tflop: float, sustained: float, micro: int, i2t: bool) -> tuple[float, int, float]:
    """(seconds per micro-step, images per micro-step, images/s) one GPU asks for."""
    step = tflop / sustained
    images = micro * (2 if i2t else 1)
    return step, images, images / step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="images written per format")
    p.add_argument("--size", type=int, default=1024, help="side of the written JPEGs (px)")
    p.add_argument("--target", type=int, default=512, help="preprocessed side (px)")
    p.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--batch", type=int, default=16, help="loader batch (images)")
    p.add_argument("--formats", default="webdataset,parquet")
    p.add_argument("--tflop", type=float, default=881.0, help="model TFLOP of one micro-step (README FLOP table)")
    p.add_argument("--sustained", type=float, default=400.0, help="assumed sustained TFLOP/s of the GPU")
    p.add_argument("--micro", type=int, default=96, help="T2I images per micro-step (Table 7 micro-batch)")
    p.add_argument("--no-i2t", action="store_true", help="the micro-step has no I2T micro-batch (λ = 0)")
    p.add_argument("--model", default="Harmon-0.5B SeGroS, 1 H100")
    p.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    args = p.parse_args(argv)
    from segros.data.sources import open_t2i

    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = set(formats) - {"webdataset", "parquet"}
    if bad or not workers or min(workers) < 0:
        p.error(f"--formats takes webdataset,parquet (got {sorted(bad)}); --workers non-negative counts")
    root = args.dir or tempfile.mkdtemp(prefix="bench_data_")
    try:
        t0 = time.perf_counter()
        images = [jpeg_bytes(i, args.size) for i in range(args.n)]
        mb = sum(map(len, images)) / args.n / 2 ** 20
        print(f"wrote {args.n} JPEGs of {args.size} px ({mb:.2f} MB each) in {time.perf_counter() - t0:.1f} s; "
              f"CPU cores here: {os.cpu_count()}", file=sys.stderr)
        specs = {}
        if "webdataset" in formats:
            specs["webdataset"] = write_webdataset(os.path.join(root, "wds"), images)
        if "parquet" in formats:
            specs["parquet"] = write_parquet(os.path.join(root, "parquet"), images)
        rows = []
        for fmt, spec in specs.items():
            t0 = time.perf_counter()
            src = open_t2i(spec, cache_dir=os.path.join(root, "hf-cache"))
            opened = time.perf_counter() - t0
            for w in workers:
                rate, cpu_ms = throughput(src, args.target, w, args.batch)
                rows.append((fmt, w, rate, rate / max(w, 1), cpu_ms, opened))
        print(f"\nData loading: {args.size} px JPEG -> {args.target} px pixels (decode + resize_to_pixels), "
              f"batch {args.batch}, {args.n} images\n")
        load = os.getloadavg()[0]
        print(f"| format | workers | images/s | images/s per worker | CPU ms per image | images/s per busy core "
              f"| open (s) |")
        print("|---|---|---|---|---|---|---|")
        for fmt, w, rate, per, cpu_ms, opened in rows:
            print(f"| {fmt} | {w} | {rate:.1f} | {per:.1f} | {cpu_ms:.1f} | {1000 / cpu_ms:.1f} | {opened:.1f} |")
        print(f"\n(wall-clock rates share {os.cpu_count()} cores at load average {load:.1f}; the CPU time per image "
              "does not depend on the load: 1000 / it is what one worker on an idle core decodes)")
        step, imgs, need = demand(args.tflop, args.sustained, args.micro, not args.no_i2t)
        core = max((1000 / r[4] for r in rows), default=float("nan"))
        print(f"\nGPU demand (estimate): {args.model}: {args.tflop:g} TFLOP per micro-step at an assumed "
              f"{args.sustained:g} TFLOP/s sustained = {step:.2f} s per micro-step, {imgs} images "
              f"({args.micro} T2I{'' if args.no_i2t else f' + {args.micro} I2T'}) -> {need:.1f} images/s; "
              f"at {core:.1f} images/s per busy core that is {need / core:.1f} workers (cores) per GPU.")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
