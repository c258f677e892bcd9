"""Studies: long, resumable measurements whose outputs are committed documents (the cache study, the toy study
of the seeds' claims, the Sparse Context study). One folder each, with its grid, its run and its doc writer.
They may import every layer below them (the speed benchmark's timing helpers, fine-tuning, the pipeline);
only `jobs/` imports them."""
