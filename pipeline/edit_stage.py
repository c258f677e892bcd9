"""The GPU stage with the model: `EditActor` loads one model entry per actor, once, with the metrics' models,
and runs units (a record x its configurations, see `units`) through the editor; `unit_stage.UnitActor` is the
frame (order, pairing, error rows). Pixels leave as arrays: PNGs and pixel metrics are the CPU stage's work.

It sits in pipeline/ (it moves records, images and rows) and calls down into actors/ for the model. The model
side (policies, the editor, loading: torch and diffusers) is imported where an actor uses it, not at the top:
the driver imports this module only to name the actor class for Ray, and stays small."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import PIL.Image

from . import storage as st
from .config import MODEL_OPTIONS, cache_label, policy_kwargs
from .configuration import Configuration
from .records import policy_params_json, utcnow
from .resume import kept_counts
from .scoring import StageMetrics, metric_settings, scoring_of
from .unit_stage import UnitActor, UnitEdit, reference_of

if TYPE_CHECKING:
    from actors.edit_result import EditResult


def keep_mask_mean(result: EditResult) -> np.ndarray:
    """The keep mask averaged over steps (what was computed where), on the latent grid; when some step left
    noisy tokens without queries (SpotEdit), the active-token mask instead."""
    masks = [s.keep_mask for s in result.trace]
    if any(s.active_mask is not None for s in result.trace):
        masks = [np.ones(s.keep_mask.shape, bool) if s.active_mask is None else s.active_mask for s in result.trace]
    return np.mean(masks, axis=0).astype(np.float32)


class EditActor(UnitActor):
    """The GPU stage with the real (or tiny) diffusers model: loaded once per actor, with the metrics' models.

    `configs` (config_id -> `Configuration.to_row()` of the run's grid) travels once per actor; each
    unit names its configurations by id."""

    def __init__(self, model: str, model_path: str | None, output: str, run_id: str,
                 configs: dict[str, dict[str, Any]], storage: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, cache_dir: str = "~/.cache/dropedit/models",
                 model_options: dict[str, Any] | None = None, pairing: str = "read_back") -> None:
        self.storage = st.StorageConfig.from_mapping(storage)
        sources = {c.get("budget_source") for c in configs.values()} - {None}   # the rows, before rebuilding
        stored = kept_counts(st.join_uri(output, "results"), sources, self.storage) if sources else {}
        super().__init__(configs, run_id, stored, output=output, storage=storage, pairing=pairing)
        path = st.localize_model_path(model_path, cache_dir, self.storage) if model_path else None
        options = dict(model_options or {})
        lora = options.pop("lora", None)
        placement = {k: options.pop(k) for k in ("attention_backend", "text_encoders") if k in options}
        self.kv_store = options.pop("kv_store", "compute")
        self.bucket = options.pop("bucket", None)
        if options:
            raise ValueError(f"unknown model options {sorted(options)}; accepted: {', '.join(MODEL_OPTIONS)}")
        if lora:
            lora = st.localize_model_path(lora, cache_dir, self.storage)
        from actors.loading import load_pipeline

        self.model = model
        self.pipe = load_pipeline(model, path=path, lora=lora, **placement)
        self.device = str(self.pipe.device)
        self._metric_models(metrics or {}, cache_dir)
        self._warm_up(largest_size(configs.values()))

    def _metric_models(self, metrics: dict[str, Any], cache_dir: str) -> None:
        """The edit-stage metrics (`metrics`, those that hold a model): built once per actor, their models on
        first use, from local files; s3:// prefixes are synced like model paths."""
        def localize(path: str) -> str:
            return st.localize_model_path(path, cache_dir, self.storage)

        device = "cpu" if metrics.get("device") == "cpu" else self.device   # metrics.device: off the card
        self.metrics = StageMetrics("edit", metric_settings(metrics, device, localize))

    def _warm_up(self, size: tuple[int, int] | None) -> None:
        """One 1-step edit of a blank image at the run's largest size (the model's own where a configuration
        gives none), so the first unit's times are not the actor's start-up: lazy allocations, first kernel
        launches, and the memory pool grown to the run's peak once rather than inside a timed edit."""
        import policies
        from actors.editor import Editor

        height, width = size or (None, None)
        blank = PIL.Image.new("RGB", (width or 64, height or 64), (127, 127, 127))
        Editor(self.pipe, policies.make("full")).edit(blank, "warm up", seed=0, steps=1, height=height, width=width)

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        import policies
        from actors.editor import Editor
        from costs.ideal_speedup import ideal_columns

        started = utcnow()
        source = PIL.Image.fromarray(inputs["source"])
        references = [PIL.Image.fromarray(r) for r in inputs["references"]]
        policy = policies.make(config.policy, **policy_kwargs(config, budget))
        cache = None if config.cache is None else dict(config.cache)
        result = Editor(self.pipe, policy, self.kv_store, self.bucket).edit(
            source, unit["instruction"], seed=config.seed, steps=config.steps,
            guidance_scale=config.guidance_scale, height=config.height, width=config.width,
            references=references, resize_filter=config.resize_filter, cache=cache)
        row = self.ok_row(config, unit, started)
        row.update(trace_columns(result))
        row.update(ideal_columns(result, self.pipe.transformer, self.model, config.policy))
        if result.cache_name is not None:   # asked for by the configuration, or declared by the policy
            columns = result.cache_columns()
            row.update({k: v for k, v in columns.items() if k not in ("cache", "cache_params")},
                       cache_params=policy_params_json(result.cache_params))
            row["cache"] = row.get("cache") or cache_label(result.cache_params)
        return UnitEdit(config, row, emit=True, image=np.asarray(result.image.convert("RGB")),
                        keep_mean=keep_mask_mean(result), kept_per_step=[s.kept for s in result.trace])

    def score(self, edits: list[UnitEdit], inputs: dict[str, Any], unit: Mapping[str, Any]) -> None:
        """The edit-stage metrics of the emitted ok edits; the group's `full` edit is the in-memory reference."""
        for e in edits:
            if e.emit and e.ok:
                e.row.update(self.metrics.score(scoring_of(e, inputs, reference_of(e, edits), unit)))


def largest_size(configs: Any) -> tuple[int, int] | None:
    """(height, width) of the run's largest configured edit, or None when none names a size."""
    sizes = [(int(c["height"]), int(c["width"])) for c in configs if c.get("height") and c.get("width")]
    return max(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else None


def trace_columns(result: EditResult) -> dict[str, Any]:
    """The row's columns read off the edit's trace."""
    trace = result.trace
    return dict(
        runtime_s=result.seconds, policy_applied=policy_params_json(result.policy_params),
        keep_ratio_mean=result.keep_ratio_mean, query_ratio_mean=result.query_ratio_mean,
        keep_ratio_per_step=[s.keep_ratio for s in trace], tokens_processed=sum(s.kept for s in trace),
        keys_per_step=[s.noisy + s.kept if s.keys is None else s.keys for s in trace],
        from_layer_per_step=[s.from_layer for s in trace],
        active_per_step=[s.noisy if s.active is None else s.active for s in trace],
        kept_per_step=[s.kept for s in trace], loop_s=sum(s.seconds for s in trace),
        policy_s=sum(s.policy_seconds for s in trace), selector_s=sum(s.selector_seconds for s in trace),
        attention_backend=result.attention_backend, text_encoders=result.text_encoders,
        encoder_move_s=result.encoder_move_s, kv_store=result.kv_store, shape_bucket=result.shape_bucket)
