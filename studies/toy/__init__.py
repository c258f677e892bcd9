"""The toy study (`python -m jobs.toy_results`, docs/toy-results.md): the seeds' claims measured on a trained toy
model against exact targets. `run.run_study` is the one call; the other modules are its parts."""
