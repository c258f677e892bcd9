"""Data movement: records, sources, storage, config grid, metrics."""
