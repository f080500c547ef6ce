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
    from weights_convert.devices import DeviceError, checked_device

    try:
        config.option.device = checked_device(config.getoption("--device"))
    except DeviceError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def device(request) -> str:
    return request.config.getoption("--device")
