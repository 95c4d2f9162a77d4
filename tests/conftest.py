"""Settings shared by the whole suite, and the guard that keeps `make test-fast` fast."""

import os
import sys

import pytest
import torch

# Nothing may reach a model hub: diffusers objects are built from configs with random weights.
os.environ["HF_HUB_OFFLINE"] = "1"
# The tests run many tiny batched ops; on a busy 2-core machine torch's thread pool makes those over
# 10x slower than one thread (threads wait on a preempted sibling). One thread keeps the suite steady.
torch.set_num_threads(1)

# `make test-fast` runs `pytest -m "not process"`. A test that starts a Python interpreter (the command line in a
# fresh process, torchrun and its workers) spends seconds importing torch, so it must carry @pytest.mark.process;
# the audit hook below fails one that does not, so the fast lane cannot grow slow unnoticed.
_running: list[pytest.Item] = []  # the test being set up, run or torn down (its fixtures included)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _python_needs_the_process_mark(event: str, args: tuple) -> None:
    """Audit hook: ``subprocess`` starting this interpreter's Python from a test without the mark fails that test."""
    if event != "subprocess.Popen" or not _running or _running[-1].get_closest_marker("process"):
        return
    executable = os.path.realpath(os.fsdecode(args[0]))  # args: (executable, argv, cwd, env)
    if executable == os.path.realpath(sys.executable):
        pytest.fail(f"{_running[-1].nodeid} starts a Python process: mark it @pytest.mark.process "
                    "(`make test-fast` leaves such tests out)", pytrace=False)


sys.addaudithook(_python_needs_the_process_mark)
