"""ONNX export (torch.onnx, TorchScript-based exporter): the graph, its fp16 and int8 variants,
and tiffin.json embedded in the file's metadata_props (the runtimes that run it are
tiffin/runtimes.py's rows).

fp16 converts the graph's float weights and ops to half with float32 inputs and outputs kept
(onnxruntime's float16 converter), so callers feed and read the same arrays as for fp32. int8
is ONNX Runtime quantization, recorded in tiffin.json's `quantization`, which the exporter
returns rather than writing into the metadata it was given.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from tiffin.export.specs import ExportSpec

# Opset 17: the newest the TorchScript-based exporter in torch 2.11 emits without onnxscript
# (the dynamo exporter needs it), and ONNX Runtime >= 1.14 runs it.
DEFAULT_OPSET = 17


def export_onnx(net: torch.nn.Module, spec: ExportSpec, path: Path, precision: str, opset: int | None,
                metadata: dict, calibration: list[tuple[torch.Tensor, ...]] | None = None) -> dict:
    """Trace `net` on the spec's sample and write `path` with `metadata`, and what this adds to
    it, in metadata_props; return what it adds to tiffin.json (int8: `quantization`).

    int8 is ONNX Runtime quantization of the fp32 graph, by the method measured to pay off per
    task: speech, dynamic int8 on the MatMuls (about 1.7x on CPU for wav2vec2); video, static
    QDQ calibrated on real clips (dynamic int8 on Conv3d made SlowFast slower).
    """
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net, spec.trace_sample(), str(path), input_names=[i.name for i in spec.inputs],
            output_names=[o.name for o in spec.outputs], dynamic_axes=spec.dynamic_axes(),
            opset_version=opset or DEFAULT_OPSET, dynamo=False, do_constant_folding=True,
        )
    added = {}
    if precision == "int8":
        from tiffin.tasks import TASKS

        added["quantization"] = {**int8_settings(),
                                 "method": "static QDQ" if TASKS[spec.task].static_int8 else "dynamic MatMul"}
        _quantize(path, spec, calibration, added["quantization"]["reduce_range"])
    model = onnx.load(str(path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = _topologically_sorted(convert_float_to_float16(model, keep_io_types=True))
    onnx.checker.check_model(model)
    entry = model.metadata_props.add()
    entry.key, entry.value = "tiffin", json.dumps({**metadata, **added})
    onnx.save(model, str(path))
    return added


def _quantize(path: Path, spec: ExportSpec, calibration: list[tuple[torch.Tensor, ...]] | None,
              reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = path.with_suffix(".fp32.onnx")
    path.rename(fp32)
    try:
        prepared = path.with_suffix(".pre.onnx")
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        from tiffin.tasks import TASKS

        # reduce_range (int8_settings): on x86 without VNNI, u8 x s8 products are summed in pairs into
        # saturating 16-bit lanes (VPMADDUBSW); 7-bit weights cannot overflow them (ONNX Runtime's docs)
        if not TASKS[spec.task].static_int8:
            quantize_dynamic(str(prepared), str(path), op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8, reduce_range=reduce_range)
        else:
            names = [i.name for i in spec.inputs]

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter([{n: x.numpy() for n, x in zip(names, b)} for b in calibration or []])

                def get_next(self):
                    return next(self.batches, None)

            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            reduce_range=reduce_range)
    finally:
        fp32.unlink(missing_ok=True)
        path.with_suffix(".pre.onnx").unlink(missing_ok=True)


def int8_settings() -> dict:
    """How int8 is quantised on this CPU (recorded in tiffin.json as `quantization`)."""
    from tiffin.cpu import has_vnni

    vnni = has_vnni()
    return {"reduce_range": vnni is False,
            "why": {True: "this CPU has VNNI: full-range int8 weights",
                    False: "this CPU has no VNNI (AVX-512 VNNI, AVX-VNNI or AMX int8): 7-bit weights, which "
                           "ONNX Runtime's u8 x s8 kernels cannot saturate",
                    None: "VNNI unknown (not x86 Linux): full-range int8 weights"}[vnni]}


def read_onnx_metadata(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["tiffin"])


def _topologically_sorted(model):
    """The float16 converter appends its input casts after the nodes that read them; ONNX wants
    every node after its producers (onnx.checker refuses the graph otherwise)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = False
        for node in list(pending):
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
                pending.remove(node)
                progressed = True
        if not progressed:  # a cycle or a missing input: leave the order to the checker's verdict
            ordered += pending
            break
    del graph.node[:]
    graph.node.extend(ordered)
    return model
