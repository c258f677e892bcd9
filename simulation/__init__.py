"""`dropedit simulate`: the ablation graph of `dropedit run` on N logical GPUs with a SYNTHETIC model whose edits
take the cost model's time (`cluster`), and the scaling table of docs/scaling (`scaling_table`)."""
