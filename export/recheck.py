"""`tiffin check` as a Python function: the parity gate re-run on an artifact already written,
against the model it was exported from, on any runtime of its format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.artifact_json import fixed_batch, read_artifact, sha256
from tiffin.ctc import Vocabulary
from tiffin.export.parity import check_parity, conv_of, slow_hint
from tiffin.export.real_samples import real_samples
from tiffin.export.source_model import export_spec_of, load_source, source_model
from tiffin.host import open_session
from tiffin.tasks import TASKS


def check_artifact(path: Path, data: Path | None = None, source: Path | None = None, loaded=None,
                   runtime: str | None = None, budget_s: float | None = 900.0, trust: bool = False) -> dict[str, Any]:
    """Re-run the parity report of an artifact against the model it was exported from (`source`,
    else `loaded`, a model already in memory, else the one tiffin.json records), run on `runtime`
    (a row of tiffin.runtimes; default: the recorded one, else the format's first); the report
    says which runtime and whether that model's weights are still the ones exported. A program
    artifact opens only when signed by a trusted key or `trust` (tiffin.host.open_session)."""
    meta = read_artifact(path)
    if loaded is not None and source is None:
        model, task, spec = None, loaded.task, export_spec_of(loaded, fixed_batch(meta))
    else:
        model = source_model(Path(path), meta, source)
        task, loaded, spec = load_source(model, fixed_batch(meta))
    samples = spec.check_samples() + (real_samples(task, loaded, data) if data else [])
    agreement = TASKS[task].part("agreement")(meta)
    if meta.get("decoder") and hasattr(agreement, "use_beam"):
        from tiffin.ctc_beam import BeamDecoder, options_of

        agreement.use_beam(BeamDecoder(Vocabulary.of_artifact(meta), options_of(Path(path), meta["decoder"])))
    from tiffin.host import chosen_runtime

    row = chosen_runtime(path, meta, runtime)
    chosen = row.name
    # a runtime computing in a looser precision than the file's (OpenVINO's bf16 hint) is judged by its tolerances
    judged = max([meta["precision"], row.computes or meta["precision"]], key=list(spec.tolerances).index)
    report = check_parity(loaded.net, open_session(path, meta, runtime=chosen, trust=trust), samples,
                          spec.tolerances[judged], agreement, conv_of(loaded), budget_s,
                          slow_hint(judged, exporting=False))
    report["runtime"] = chosen
    recorded = meta.get("source")
    if isinstance(recorded, dict) and recorded.get("sha256") and model is not None and Path(model).is_file():
        report["source_sha256_matches"] = sha256(Path(model)) == recorded["sha256"]
    return report
