"""GenEval's own evaluator, run from the user's checkout in its own environment (a subprocess).

GenEval's ``evaluation/evaluate_images.py`` needs mmdet 2.x, mmcv-full, open_clip and
clip_benchmark on a CUDA GPU (it asserts one); that stack does not install beside this package,
so :class:`OfficialScorer` runs it with the interpreter of its environment::

    <python> <checkout>/evaluation/evaluate_images.py <image dir> --outfile <file>
        --model-path <detector folder> [--model-config <mmdet config>] [--options key=value ...]

with the checkout as working directory, our ``PYTHONPATH`` removed and ``CUDA_VISIBLE_DEVICES``
set when ``device`` is given. ``<detector folder>`` holds ``<model>.pth`` (GenEval's
``download_models.sh`` saves ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth`` there); the
mmdet config defaults to the one inside the installed mmdet; the CLIP weights are whatever
``open_clip.create_model_and_transforms("ViT-L-14", pretrained="openai")`` finds in open_clip's
cache in that environment (pass ``env={"HF_HUB_OFFLINE": "1", ...}`` to keep it offline).

The evaluator sees a view of the layout made of symbolic links to exactly the images that
:func:`segros.eval.geneval_layout.check_layout` found readable (so a partial layout never reaches
it unlabelled, and stray files such as ``0001.png~`` are not scored); its rows are mapped back to
the real paths, checked to cover every image once, and summarised by
:func:`segros.eval.geneval.summarize` (which averages as ``summary_scores.py``). As a check of our
rule engine, every row whose prompt has no colour clause is re-scored from the boxes the
evaluator reports; disagreements are listed in the results (``"rule_check"``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from segros.eval.geneval import Detection, evaluate_filtered
from segros.eval.geneval_scoring import GenEvalScorer, read_results

EVALUATE_SCRIPT = os.path.join("evaluation", "evaluate_images.py")
# evaluate_images.py --options keys, with their defaults there
OFFICIAL_OPTIONS = {
    "model": "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco", "clip_model": "ViT-L-14", "bgcolor": "#999",
    "crop": "1", "threshold": "0.3", "counting_threshold": "0.9", "max_objects": "16", "max_overlap": "1.0",
    "position_threshold": "0.1",
}


class OfficialScorer(GenEvalScorer):
    """GenEval's ``evaluate_images.py`` as a subprocess; see the module docstring.

    ``geneval_dir``: the checkout; ``python``: the interpreter of its environment;
    ``detector_dir``: the folder with the Mask2Former ``.pth`` (``--model-path``);
    ``model_config``: an mmdet config file (``--model-config``, default mmdet's own);
    ``options``: ``--options`` (keys of :data:`OFFICIAL_OPTIONS`); ``device``: value of
    ``CUDA_VISIBLE_DEVICES``; ``env``: extra environment variables; ``timeout``: seconds.
    """

    name = "official"

    def __init__(self, geneval_dir, python, detector_dir, *, model_config=None, options=None, device=None, env=None,
                 timeout=None):
        self.geneval_dir = os.path.abspath(os.fspath(geneval_dir))
        script = os.path.join(self.geneval_dir, EVALUATE_SCRIPT)
        if not os.path.isfile(script):
            raise FileNotFoundError(f"{script} not found: geneval_dir must be a GenEval checkout")
        self.script = script
        self.python = os.fspath(python)
        if not (os.path.isfile(self.python) or shutil.which(self.python)):
            raise FileNotFoundError(f"python {self.python!r} not found: give the interpreter of GenEval's environment")
        self.detector_dir = os.path.abspath(os.fspath(detector_dir))
        if not os.path.isdir(self.detector_dir):
            raise FileNotFoundError(f"detector_dir {self.detector_dir!r} is not a folder (GenEval's --model-path)")
        self.model_config = os.path.abspath(os.fspath(model_config)) if model_config else None
        if self.model_config and not os.path.isfile(self.model_config):
            raise FileNotFoundError(f"model_config {self.model_config!r} not found")
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        unknown = sorted(set(self.options) - set(OFFICIAL_OPTIONS))
        if unknown:
            raise ValueError(f"unknown GenEval options {unknown}; valid: {sorted(OFFICIAL_OPTIONS)}")
        checkpoint = os.path.join(self.detector_dir, self.option("model") + ".pth")
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"{checkpoint} not found: GenEval loads <model-path>/<model>.pth "
                                    f"(its evaluation/download_models.sh saves it under that name)")
        self.device, self.env, self.timeout = device, dict(env or {}), timeout

    def option(self, key):
        return self.options.get(key, OFFICIAL_OPTIONS[key])

    def labels(self):
        return {"scorer": self.name, "detector": f"mmdet {self.option('model')} (GenEval evaluate_images.py)",
                "color_model": f"open_clip {self.option('clip_model')} openai", "geneval_dir": self.geneval_dir,
                "options": dict(self.options)}

    def command(self, image_dir, outfile):
        """The command line run for ``image_dir`` writing ``outfile``."""
        cmd = [self.python, self.script, os.fspath(image_dir), "--outfile", os.fspath(outfile),
               "--model-path", self.detector_dir]
        if self.model_config:
            cmd += ["--model-config", self.model_config]
        if self.options:
            cmd += ["--options"] + [f"{k}={v}" for k, v in self.options.items()]
        return cmd

    def environment(self):
        """Our environment without ``PYTHONPATH``, plus ``env`` and ``CUDA_VISIBLE_DEVICES``."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if self.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.device)
        env.update({str(k): str(v) for k, v in self.env.items()})
        return env

    def score_entries(self, entries, *, progress=True, outfile=None):
        log_path = (outfile or os.path.join(tempfile.gettempdir(), "geneval_official")) + ".log"
        with tempfile.TemporaryDirectory(prefix="segros_geneval_") as work:
            view = os.path.join(work, "images")
            back = make_view(view, entries)
            raw = os.path.join(work, "results.jsonl")
            cmd = self.command(view, raw)
            if progress:
                print(f"running GenEval's evaluator on {len(entries)} images; log: {log_path}", file=sys.stderr)
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            with open(log_path, "w") as log:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                proc = subprocess.Popen(cmd, cwd=self.geneval_dir, env=self.environment(), stdout=log,
                                        stderr=subprocess.STDOUT)
                try:
                    rc = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"GenEval's evaluator ran past {self.timeout} s; log: {log_path}") from None
            if rc != 0:
                raise RuntimeError(f"GenEval's evaluator failed (exit {rc}); log {log_path}:\n{_tail(log_path)}")
            if not os.path.isfile(raw):
                raise RuntimeError(f"GenEval's evaluator wrote no {raw}; log {log_path}:\n{_tail(log_path)}")
            rows = read_results(raw)
        for row in rows:
            name = os.path.normpath(row["filename"])
            if name not in back:
                raise ValueError(f"GenEval's evaluator reported an image it was not given: {row['filename']!r}")
            row["filename"] = back[name]
        return rows

    def finish(self, report, rows, outfile=None):
        results = super().finish(report, rows, outfile)
        results["log_file"] = results["results_file"] + ".log"
        if "position_threshold" not in self.options:
            results["rule_check"] = rule_check(rows)
        return results


def make_view(view, entries):
    """Symlink each entry's image (and its folder's ``metadata.jsonl``) under ``view`` in GenEval's
    layout; returns {view path: real path}."""
    back = {}
    for entry in entries:
        folder = os.path.join(view, f"{entry.index:05d}")
        samples = os.path.join(folder, "samples")
        if not os.path.isdir(samples):
            os.makedirs(samples)
            with open(os.path.join(folder, "metadata.jsonl"), "w") as f:
                json.dump(entry.metadata, f)
        link = os.path.join(samples, os.path.basename(entry.path))
        os.symlink(os.path.abspath(entry.path), link)
        back[os.path.normpath(link)] = entry.path
    return back


def rule_check(rows):
    """Re-score rows without a colour clause from their ``details`` (the boxes GenEval kept) with our
    rule engine; returns ``{"rows": n checked, "disagree": [filenames]}``."""
    checked, disagree = 0, []
    for row in rows:
        meta = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
        if any("color" in req for req in meta.get("include", [])):
            continue
        details = json.loads(row["details"]) if isinstance(row.get("details"), str) else (row.get("details") or {})
        objects = {c: [Detection(tuple(b[:4]), float(b[4]) if len(b) > 4 else 1.0) for b in boxes]
                   for c, boxes in details.items() if boxes}
        correct, _ = evaluate_filtered(meta, objects)
        checked += 1
        if bool(correct) != bool(row["correct"]):
            disagree.append(row["filename"])
    return {"rows": checked, "disagree": disagree}


def _tail(path, n=4000):
    with open(path, errors="replace") as f:
        return f.read()[-n:]
