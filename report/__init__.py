"""Reading results back: the table (Markdown, CSV), paired speedups with their caveats, why a metric is
missing, plots and labelled image grids, from the Parquet a run wrote."""
from .tables import load_results, report_metrics, summary_table, write_report

__all__ = ["load_results", "report_metrics", "summary_table", "write_report"]
