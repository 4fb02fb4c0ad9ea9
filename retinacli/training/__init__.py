"""Training, from explicit typed arguments (no recipe): the loop, solver, schedules,
checkpoints, random state, metrics, several processes and the learning-rate chart."""
