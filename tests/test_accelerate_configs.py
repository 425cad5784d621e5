"""The accelerate config files under accelerate_configs/ are read as `accelerate launch --config_file`
reads them: accelerate's own argument validation, launcher environment and plugin classes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "accelerate_configs"

# file -> (distributed type, processes, mixed precision the launcher passes on)
EXPECTED = {
    "1gpu.yaml": ("NO", 1, "bf16"),
    "8gpu_ddp.yaml": ("MULTI_GPU", 8, "bf16"),
    "8gpu_fsdp.yaml": ("FSDP", 8, "bf16"),
    "8gpu_zero2.yaml": ("DEEPSPEED", 8, "no"),  # precision: "auto" in the DeepSpeed file, from the Accelerator
}


def launch_args(name):
    """What `accelerate launch --config_file accelerate_configs/<name> -m segros.train ...` resolves to."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(FOLDER / name), "-m", "segros.train",
                                                "--preset", "small", "--out", "runs/x"])
    return _validate_launch_command(args)


def test_every_file_is_listed():
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_each_config(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(FOLDER / name))
    kind, n, precision = EXPECTED[name]
    assert cfg.distributed_type.name == kind and cfg.num_processes == n and cfg.num_machines == 1
    args, defaults, _ = launch_args(name)
    assert args.num_processes == n and args.mixed_precision == precision
    assert (args.use_deepspeed, args.use_fsdp, args.multi_gpu) == (kind == "DEEPSPEED", kind == "FSDP", kind == "MULTI_GPU")
    assert args.training_script == "segros.train" and args.module


def test_fsdp_plugin_from_the_launch_environment():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = launch_args("8gpu_fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.__name__ == "size_based_auto_wrap_policy" and plugin.min_num_params == 10_000_000
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"


def test_zero2_plugin_is_recas_deepspeed_zero2():
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, from_config = launch_args("8gpu_zero2.yaml")
    # as accelerate's launch_command does before calling the DeepSpeed launcher
    args.deepspeed_fields_from_accelerate_config = ",".join(
        list(defaults.deepspeed_config) + (["mixed_precision"] if from_config else []))
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == "accelerate_configs/deepspeed_zero2.json"
    cwd = os.getcwd()
    os.chdir(ROOT)  # the file is named relative to the repository root, where the runbook launches
    try:
        with mock.patch.dict(os.environ, env):
            plugin = DeepSpeedPlugin()
    finally:
        os.chdir(cwd)
    assert plugin.zero_stage == 2 and plugin.deepspeed_config["zero_optimization"] == {"stage": 2, "overlap_comm": True}
    # xtuner's deepspeed_zero2 (Reca Harmon/train.sh): everything else "auto", filled by the Accelerator
    ds = json.loads((FOLDER / "deepspeed_zero2.json").read_text())
    assert ds["gradient_accumulation_steps"] == ds["train_micro_batch_size_per_gpu"] == ds["gradient_clipping"] == "auto"
    assert ds["bf16"] == {"enabled": "auto"} and ds["zero_allow_untested_optimizer"] is True
