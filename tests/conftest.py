"""Test-wide settings: set before any project module is imported."""

import os

# Triton reads this when kernels are decorated: the CPU runs them through its interpreter,
# and VOS_TEST_DEVICE=cuda (`make gpu-check`) compiles them for the GPU instead.
kernel_tests_on_gpu = os.environ.get("VOS_TEST_DEVICE", "cpu").startswith("cuda")
os.environ.setdefault("TRITON_INTERPRET", "0" if kernel_tests_on_gpu else "1")
# Tests never talk to wandb; a test that checks wandb's offline files sets its own mode.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Under pytest-xdist (`make test` runs two worker processes) each worker runs torch on one
# thread: two processes with a thread per core each would oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # in case torch was imported before OMP_NUM_THREADS was set


@pytest.fixture
def run_command(monkeypatch, capfd):
    """``run_command("vos.eval", *args, cwd=DIR)``: the command's main() in this process, with
    what `subprocess.run(..., capture_output=True, text=True)` would give (`helpers`)."""
    from helpers import command_in_process

    def run(command: str, *args: str, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        return command_in_process(command, [str(a) for a in args], monkeypatch, capfd)

    return run


@pytest.fixture
def run_python_m(run_command):
    """A stand-in for ``subprocess.run([sys.executable, "-m", MODULE, *ARGS], ...)`` that runs
    the command in this process (the keyword arguments but ``cwd`` do not apply)."""

    def run(command: list, cwd=None, **_):
        assert command[1] == "-m", command
        return run_command(command[2], *command[3:], cwd=cwd)

    return run


@pytest.fixture
def tensors_on_test_device():
    """Kernel test modules use this for every test: with VOS_TEST_DEVICE=cuda the tensors a
    test creates without naming a device are moved to the GPU (`helpers.tensors_created_on`);
    on the CPU, the default, it changes nothing."""
    from helpers import kernel_test_device, tensors_created_on

    device = kernel_test_device()
    if device.type == "cpu":
        yield device
        return
    with tensors_created_on(device):
        yield device
