"""Test session set-up; shared constants and helpers are in helpers.py."""
import os

import pytest

# Before anything loads numpy: the BLAS kernels that give the original's resize bits (see reproduce/__init__.py).
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="where the golden layer, net, module, gradient and solver tests run (cpu, cuda[:N])")


def pytest_configure(config):
    """A device this machine cannot run fails the session in one line: never a silent skip or pass."""
    from weights_convert.runtime.devices import DeviceError, checked_device

    try:
        config.option.device = checked_device(config.getoption("--device"))
    except DeviceError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def device(request) -> str:
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """Each Model Zoo net's weights and inputs as tests/golden_zoo's oracle writes them (a separate
    process, numpy only): name -> (caffemodel, inputs .npz)."""
    import json
    import subprocess
    import sys

    from helpers import GOLDEN_ZOO

    root = tmp_path_factory.mktemp("zoo")
    files = {}
    for name, case in json.loads((GOLDEN_ZOO / "cases.json").read_text()).items():
        weights, inputs = root / f"{name}.caffemodel", root / f"{name}_inputs.npz"
        oracle = [sys.executable, str(GOLDEN_ZOO / "zoo_oracle.py")]
        subprocess.run(oracle + ["weights", str(GOLDEN_ZOO / case["params"]), str(case["seed"]), str(weights)], check=True)
        subprocess.run(oracle + ["inputs", name, str(inputs)], check=True)
        files[name] = (weights, inputs)
    return files
