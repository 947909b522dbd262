"""One training run: the runner, the run directory, checkpoints, preemption, safe writes, several
processes, the losses and schedules, evaluation, and prediction with and export of a finished run."""
