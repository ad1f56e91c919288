"""Test-wide settings: set before any project module is imported."""

import os

# Triton reads this when kernels are decorated: the CPU runs them through its interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests never talk to wandb; a test that checks wandb's offline files sets its own mode.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
