"""`dropedit report RESULTS [--out DIR]`: the table, plots and a labelled grid from the results Parquet."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder (local or s3://), e.g. results/results")
    p.add_argument("--out", default="report", help="local folder for the report")
    p.add_argument("--sheet-records", type=int, default=8, help="records (rows) on the image grid")


def run(args: argparse.Namespace) -> int:
    from report import write_report

    write_report(args.results, args.out, sheet_records=args.sheet_records)
    return 0
