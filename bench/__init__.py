"""The speed benchmark: each policy's speed against `full` on a benchmark-size model of the real classes
(`bench.speed`, with the forced plans of `bench.forced`), the summary rows priced on the real architectures by
the cost model (`costs`) (`bench.summary`), the Ray pipeline's overhead (`bench.ray_overhead`), the Markdown report (`bench.markdown`),
the GPU run's arguments and table (`bench.gpu_args`, `bench.gpu_summary`, `bench/gpu.sh`), the whole
measurement as one call (`bench.run`), the benchmark's model families (`bench.families`) and the FLOP model's
real-size FLUX.2 [klein] / klein KV table (`bench.flux2_table`).

`dropedit bench` / `python -m jobs.bench` (the `ray job submit` entrypoint) parse the command line and call
`bench.run.benchmark`. Only `jobs/` and the studies import this package.
"""
