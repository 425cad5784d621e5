"""Shared by the ``*_driver.py`` scripts, which run in the official environments (not our venv),
and by the parity tests.

A driver is started as a script, so this folder is on its ``sys.path`` and ``import driver_common``
works without our package being installed there.
"""

import os
import sys
import types


def stub(name, **attrs):
    """Put an empty module ``name`` (with ``attrs``) into ``sys.modules`` before anything imports it."""
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


def stub_torchvision_registrations():
    """The CPU-torch workaround: the torchvision wheel is CUDA-linked, and these two modules fail to
    import beside a CPU torch; nothing the drivers call needs them."""
    stub("torchvision._meta_registrations")
    stub("torchvision._autograd_registrations")


def reca_repo():
    """The Reca checkout (wishhyt/reconstruction-alignment) that adds Reca's layouts to the parity
    checks, if given: ``SEGROS_PARITY_RECA_REPO`` or ``SEGROS_PARITY_SHOWO_RECA_REPO`` (the same checkout)."""
    return os.environ.get("SEGROS_PARITY_RECA_REPO") or os.environ.get("SEGROS_PARITY_SHOWO_RECA_REPO") or None
