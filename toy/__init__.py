"""The toy testbed: a procedural editing task whose right answer is known exactly, the small FLUX.1-Kontext
model trained on it (the classes of the real one at toy sizes), its Ray Train loop, its model card, and the
study that checks the seeds' claims on it (`docs/toy-results.md`).

Entry points stay in `jobs/` (`dropedit train`, `dropedit toy-data`, `python -m jobs.toy_card`,
`python -m jobs.toy_results`, `python -m jobs.make_demo`); everything they run lives here. This package
may import `pipeline`, `actors` and `policies`; nothing there imports it.
"""
