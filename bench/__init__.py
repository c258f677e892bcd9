"""The speed benchmark: each policy's speed against `full` on a benchmark-size model of the real classes
(`bench.speed`), the FLOP model that prices the same traces on the real architectures (`bench.flops`),
the summary rows (`bench.summary`), the Ray pipeline's overhead (`bench.ray_overhead`), the Markdown report
(`bench.markdown`), and the whole measurement as one call (`bench.run`).

`dropedit bench` / `python -m jobs.bench` (the `ray job submit` entrypoint) parse the command line and call
`bench.run.benchmark`. This package may import `pipeline`, `actors` and `policies`; nothing there imports it.
"""
