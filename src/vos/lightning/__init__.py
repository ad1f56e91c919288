"""Training with PyTorch Lightning: the LightningModules (a VOS network; a flow network), the
data modules, callbacks (reader schedules, the step progress bar), the wandb dashboard,
loggers, optimisers and schedules, strategies, and `training`, which runs a whole run."""
