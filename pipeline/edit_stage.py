"""The Ray Data stage of an ablation: one model per actor, loaded once; turns work items (a record and the
id of one of the stage's configurations) into output rows. Anything that goes wrong with one item becomes
that item's error row.

It sits in pipeline/ (it moves records, images and rows) and calls down into actors/ for the model."""
from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa

import policies
from actors.editor import Editor
from actors.loading import load_pipeline
from actors.results import EditResult

from . import storage as st
from .images import load_image, record_image, record_mask
from .metrics import Clip, Lpips, Structure, VlmJudge, background_metrics, fidelity_metrics, judge_columns
from .config import BUDGET_FROM, METRIC_GROUPS, policy_kwargs
from .records import (STATUS_OK, EditRecord, base_row, error_row, policy_params_json, rows_to_table, utcnow,
                      validate_record)
from .resume import kept_counts
from .storage import safe_name


def image_uri(output: str, kind: str, config_id: str, record_id: str) -> str:
    return st.join_uri(output, kind, config_id, f"{safe_name(record_id)}.png")


def png_bytes(image: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mask_overlay(source: PIL.Image.Image, result: EditResult) -> PIL.Image.Image:
    """The keep mask averaged over steps, in green over the (dimmed) source: what was computed where.
    When some step left noisy tokens without queries (SpotEdit), the active-token mask instead."""
    masks = [s.keep_mask for s in result.trace]
    if any(s.active_mask is not None for s in result.trace):
        masks = [np.ones(s.keep_mask.shape, bool) if s.active_mask is None else s.active_mask for s in result.trace]
    mean = np.mean(masks, axis=0).astype(np.float32)
    heat = PIL.Image.fromarray((mean * 255).astype(np.uint8)).resize(source.size, PIL.Image.NEAREST)
    base = np.asarray(source.convert("RGB"), np.float32) * 0.5
    green = np.asarray(heat, np.float32)[..., None] * np.array([0.0, 0.5, 0.0], np.float32)
    return PIL.Image.fromarray((base + green).clip(0, 255).astype(np.uint8))


class EditActor:
    """`map_batches` callable (class-based, so the model is loaded once per actor).

    `configs` (config_id -> configuration dict of pipeline.config.expand_grid) travels once per actor; each
    work item names its configuration by `config_id` (a dict column of per-policy parameters would not
    survive Arrow: absent keys come back as nulls and mixed types fail)."""

    def __init__(self, model: str, model_path: str | None, output: str, run_id: str,
                 configs: dict[str, dict[str, Any]], storage: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, cache_dir: str = "~/.cache/dropedit/models",
                 model_options: dict[str, Any] | None = None) -> None:
        self.storage = st.StorageConfig.from_mapping(storage)
        path = st.localize_model_path(model_path, cache_dir, self.storage) if model_path else None
        options = dict(model_options or {})
        lora = options.pop("lora", None)
        if options:
            raise ValueError(f"unknown model options {sorted(options)}; accepted: lora")
        if lora:
            lora = st.localize_model_path(lora, cache_dir, self.storage)
        self.pipe = load_pipeline(model, path=path, lora=lora)
        self.output, self.run_id, self.configs = output, run_id, configs
        self.budgets = self._budgets()
        metrics = metrics or {}
        self.device = str(self.pipe.device)
        self._metric_models(metrics, cache_dir)
        self._warm_up()

    def _metric_models(self, metrics: dict[str, Any], cache_dir: str) -> None:
        """The metrics' models (LPIPS, CLIP, DINO): built once per actor, on first use, from local files."""
        self.compute = set(metrics.get("compute", METRIC_GROUPS))

        def localize(path: str) -> str:   # s3:// prefixes are synced like model paths
            return st.localize_model_path(path, cache_dir, self.storage)

        self.lpips = Lpips(metrics.get("lpips_weights"), metrics.get("lpips_net", "squeeze"),
                           device=self.device) if "lpips" in self.compute else None
        self.clip = Clip(metrics.get("clip_model"), self.device, localize) if "clip" in self.compute else None
        self.structure = (Structure(metrics.get("dino_model"), self.device, localize)
                          if "structure" in self.compute else None)
        self.judge = VlmJudge(metrics.get("judge"), self.device, localize) if "judge" in self.compute else None

    def _budgets(self) -> dict[tuple[str, str], list[int]]:
        """Per-record kept counts of the configurations this stage's budgets come from (written by an
        earlier stage of the same run, or an earlier run), read once per actor."""
        sources = {c["budget_source"] for c in self.configs.values() if c.get("budget_source")}
        return kept_counts(st.join_uri(self.output, "results"), sources, self.storage) if sources else {}

    def _budget(self, config: dict[str, Any], record_id: str) -> list[int] | None:
        source = config.get("budget_source")
        if source is None:
            return None
        if (source, record_id) not in self.budgets:
            raise ValueError(f"no ok row of the configuration {config['policy_params'][BUDGET_FROM]!r} for this "
                             "record: its per-step budget is unknown")
        return self.budgets[(source, record_id)]

    def _warm_up(self) -> None:
        """One 1-step edit of a blank 64x64 image, so the first record's time is not the actor's start-up
        (lazy allocations, first kernel launches) and `full` - always first - is not handicapped."""
        blank = PIL.Image.new("RGB", (64, 64), (127, 127, 127))
        Editor(self.pipe, policies.make("full")).edit(blank, "warm up", seed=0, steps=1, height=64, width=64)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return rows_to_table([self._row(item) for item in batch.to_pylist()])

    def _row(self, item: dict[str, Any]) -> dict[str, Any]:
        config = self.configs[item.pop("config_id")]
        started = utcnow()
        try:
            return self._edit(item, config, started)
        except Exception as err:   # noqa: BLE001 - one bad item must not stop the job
            return error_row(item, config, err, run_id=self.run_id, device=self.device, started_at=started)

    def _edit(self, item: dict[str, Any], config: dict[str, Any], started: datetime) -> dict[str, Any]:
        record = validate_record(item)
        source = record_image(record, self.storage)
        mask = record_mask(record, source.size, self.storage)
        references = [load_image(uri, self.storage) for uri in record.references or ()]
        policy = policies.make(config["policy"], **policy_kwargs(config, self._budget(config, record.id)))
        result = Editor(self.pipe, policy).edit(
            source, record.instruction, seed=config["seed"], steps=config["steps"],
            guidance_scale=config.get("guidance_scale"), height=config["height"], width=config["width"],
            references=references)
        out_uri = image_uri(self.output, "images", config["config_id"], record.id)
        st.write_bytes(out_uri, png_bytes(result.image), self.storage)
        st.write_bytes(image_uri(self.output, "masks", config["config_id"], record.id),
                       png_bytes(mask_overlay(source, result)), self.storage)
        self._write_inputs(record, source, mask)
        row = base_row(record, config, self.run_id)
        row.update(self._metrics(result, source, mask, config, record))
        row.update(
            output_uri=out_uri, status=STATUS_OK, runtime_s=result.seconds,
            policy_applied=policy_params_json(result.policy_params),
            keep_ratio_mean=result.keep_ratio_mean, query_ratio_mean=result.query_ratio_mean,
            keep_ratio_per_step=[s.keep_ratio for s in result.trace],
            tokens_processed=sum(s.kept for s in result.trace),
            keys_per_step=[s.noisy + s.kept if s.keys is None else s.keys for s in result.trace],
            from_layer_per_step=[s.from_layer for s in result.trace],
            active_per_step=[s.noisy if s.active is None else s.active for s in result.trace],
            kept_per_step=[s.kept for s in result.trace],
            loop_s=sum(s.seconds for s in result.trace),
            policy_s=sum(s.policy_seconds for s in result.trace),
            selector_s=sum(s.selector_seconds for s in result.trace),
            device=self.device, started_at=started, finished_at=utcnow())
        return row

    def _write_inputs(self, record: EditRecord, source: PIL.Image.Image, mask: np.ndarray | None) -> None:
        """Source, mask and target of the record beside the results, once, for reports to show."""
        stem = st.join_uri(self.output, "inputs", safe_name(record.id))
        if st.exists(f"{stem}.png", self.storage):
            return
        if mask is not None:
            st.write_bytes(f"{stem}_mask.png", png_bytes(PIL.Image.fromarray(mask.astype(np.uint8) * 255)),
                           self.storage)
        if record.target:
            st.write_bytes(f"{stem}_target.png", png_bytes(load_image(record.target, self.storage)), self.storage)
        st.write_bytes(f"{stem}.png", png_bytes(source), self.storage)   # last: its presence means "all done"

    def _metrics(self, result: EditResult, source: PIL.Image.Image, mask: np.ndarray | None,
                 config: dict[str, Any], record: EditRecord) -> dict[str, Any]:
        # PIE-Bench scores at the source's own size, against its own mask.
        edited = result.image.resize(source.size, PIL.Image.BICUBIC)
        out: dict[str, Any] = {}
        statuses = self._background(out, edited, source, mask) + self._vs_full(out, result, config, record.id)
        if self.lpips is None:
            statuses.append("not computed: lpips not in metrics.compute")
        out["lpips_status"] = _join_statuses(statuses)
        out.update(self._semantic(edited, source, mask, record))
        out.update(self._judged(result.image, source, record))
        return out

    def _background(self, out: dict[str, Any], edited: PIL.Image.Image, source: PIL.Image.Image,
                    mask: np.ndarray | None) -> list[str]:
        """psnr/ssim/mse/lpips outside the mask into ``out``; returns the LPIPS statuses."""
        if mask is None or "background" not in self.compute:
            return []
        out.update(background_metrics(edited, source, mask))
        if self.lpips is None:
            return []
        out["lpips_bg"], status = self.lpips(edited, source, mask)
        return [f"bg: {status}"]

    def _vs_full(self, out: dict[str, Any], result: EditResult, config: dict[str, Any], record_id: str) -> list[str]:
        """Fidelity to the ``full`` output of the same record into ``out``; returns the LPIPS statuses."""
        full_id = config.get("full_config_id")
        if "vs_full" not in self.compute or config["policy"] == "full" or not full_id:
            return []
        full_uri = image_uri(self.output, "images", full_id, record_id)
        if not st.exists(full_uri, self.storage):
            return [f"vs_full: no full output at {full_uri}"]
        full = load_image(full_uri, self.storage)
        out.update(fidelity_metrics(result.image, full))
        if self.lpips is None:
            return []
        out["lpips_vs_full"], status = self.lpips(result.image, full)
        return [f"vs_full: {status}"]

    def _semantic(self, edited: PIL.Image.Image, source: PIL.Image.Image, mask: np.ndarray | None,
                  record: EditRecord) -> dict[str, Any]:
        """CLIP similarity to the target prompt and DINO structure distance to the source."""
        out: dict[str, Any] = {}
        if self.clip is None:
            out["clip_status"] = "not computed: clip not in metrics.compute"
        else:
            out.update(self.clip(edited, record.target_prompt, mask))
        if self.structure is None:
            out["structure_status"] = "not computed: structure not in metrics.compute"
        else:
            out["structure_distance"], out["structure_status"] = self.structure(source, edited)
        return out


    def _judged(self, edited: PIL.Image.Image, source: PIL.Image.Image, record: EditRecord) -> dict[str, Any]:
        """The VLM judge's columns (judge_*) on the edit as the editor made it: the protocol resizes (VIEScore
        compares at the source's size, GEdit-Bench's way); the ImgEdit rubric is the record's category."""
        if self.judge is None:
            return judge_columns("not computed: judge not in metrics.compute")
        return self.judge(source, edited, record.instruction, record.category)


def _join_statuses(statuses: list[str]) -> str:
    """One message when every LPIPS attempt says the same, else each labelled."""
    if not statuses:
        return "not computed: no mask and no full reference"
    bodies = {s.split(": ", 1)[-1] for s in statuses}
    return bodies.pop() if len(bodies) == 1 and len(statuses) > 1 else "; ".join(statuses)
