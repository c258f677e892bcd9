"""The cache study (`python -m studies.cache.run`, docs/cache-study.md): temporal caches alone, pruning alone,
their compositions and the peers on the demo records: the grid and its rows (`grid`), the measurement
(`run`, with the per-configuration edits of `compare`), the verdicts (`pareto`) and the page (`doc`)."""
