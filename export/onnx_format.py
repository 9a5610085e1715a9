"""ONNX export (torch.onnx, TorchScript-based exporter): the graph, its fp16 and int8 variants,
and tiffin.json embedded in the file's metadata_props (the runtimes that run it are
tiffin/runtimes.py's rows).

fp16 converts the graph's float weights and ops to half with float32 inputs and outputs kept
(onnxruntime's float16 converter), so callers feed and read the same arrays as for fp32. int8
is ONNX Runtime quantization, recorded in tiffin.json's `quantization`, which the exporter
returns rather than writing into the metadata it was given. A model whose weights pass
EXTERNAL_DATA_THRESHOLD keeps them in model.onnx.data beside the graph (ONNX external data,
recorded with its hash in tiffin.json's `external_data`): protobuf cannot hold 2 GB.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from tiffin.artifact_formats import ARTIFACT_FORMATS
from tiffin.export.specs import ExportSpec

# Opset 17: the newest the TorchScript-based exporter in torch 2.11 emits without onnxscript
# (the dynamo exporter needs it), and ONNX Runtime >= 1.14 runs it.
DEFAULT_OPSET = 17
# Bytes of weights past which they go to model.onnx.data: protobuf refuses a message of 2 GiB,
# and the graph, its metadata and the small tensors kept inline need room under it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def export_onnx(net: torch.nn.Module, spec: ExportSpec, path: Path, precision: str, opset: int | None,
                metadata: dict, calibration: list[tuple[torch.Tensor, ...]] | None = None,
                external_data_threshold: int | None = None) -> dict:
    """Trace `net` on the spec's sample and write `path` with `metadata`, and what this adds to
    it, in metadata_props; return what it adds to tiffin.json (int8: `quantization`; past
    `external_data_threshold` bytes of weights [default EXTERNAL_DATA_THRESHOLD]: `external_data`).

    int8 is ONNX Runtime quantization of the fp32 graph, by the method measured to pay off per
    task: speech, dynamic int8 on the MatMuls (about 1.7x on CPU for wav2vec2); video, static
    QDQ calibrated on real clips (dynamic int8 on Conv3d made SlowFast slower).

    A model whose weights pass the threshold (protobuf cannot hold 2 GB: Parakeet-CTC-0.6B in
    fp32) is written as ONNX external data: the graph in `path`, every tensor of 1 KB or more in
    one model.onnx.data beside it, hashed into tiffin.json's `external_data` (the metadata
    embedded in `path` is written before that hash exists, so it lacks it, as it lacks `sha256`).
    The exporter works in a scratch folder beside `path` (torch's exporter scatters a >2 GB
    model's tensors into one file each next to its output), so `path`'s folder gets those two
    files and nothing else.
    """
    import onnx

    threshold = EXTERNAL_DATA_THRESHOLD if external_data_threshold is None else external_data_threshold
    data = path.with_name(ARTIFACT_FORMATS["onnx"].external_data)
    scratch = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=path.parent))
    try:
        exported = scratch / path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                net, spec.trace_sample(), str(exported), input_names=[i.name for i in spec.inputs],
                output_names=[o.name for o in spec.outputs], dynamic_axes=spec.dynamic_axes(),
                opset_version=opset or DEFAULT_OPSET, dynamo=False, do_constant_folding=True,
            )
        # large: the graph is handled by path (protobuf cannot serialise it whole in memory)
        large = _weight_bytes(onnx.load(str(exported), load_external_data=False)) > threshold
        added = {}
        if precision == "int8":
            from tiffin.tasks import TASKS

            added["quantization"] = {**int8_settings(),
                                     "method": "static QDQ" if TASKS[spec.task].static_int8 else "dynamic MatMul"}
            exported = _quantize(exported, spec, calibration, added["quantization"]["reduce_range"], large)
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            # by path, shape inference runs on the file (infer_shapes_path), which has no 2 GB limit
            model = _topologically_sorted(convert_float_to_float16(str(exported) if large else onnx.load(str(exported)),
                                                                   keep_io_types=True))
        else:
            model = onnx.load(str(exported))
        entry = model.metadata_props.add()
        entry.key, entry.value = "tiffin", json.dumps({**metadata, **added})
        external = _weight_bytes(model) > threshold
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        if external:
            onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
                      size_threshold=1024)
        else:
            onnx.save(model, str(path))
        del model
        onnx.checker.check_model(str(path))  # by path: a model with external data is checked with it
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if external:
        from tiffin.artifact_json import sha256

        added["external_data"] = {"file": data.name, "sha256": sha256(data)}
    return added


def _weight_bytes(model) -> int:
    """Bytes of the graph's initializers (subgraphs' too), wherever they are stored (raw, typed
    fields, external files), from their shapes and element types."""
    import math

    import onnx
    from onnx.external_data_helper import _get_initializer_tensors

    total = 0
    for tensor in _get_initializer_tensors(model):
        if tensor.data_type == onnx.TensorProto.STRING:
            total += sum(len(s) for s in tensor.string_data)
            continue
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(tensor.data_type)
        if bits is None:
            bits = 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        total += math.prod(tensor.dims) * bits // 8
    return total


def _quantize(path: Path, spec: ExportSpec, calibration: list[tuple[torch.Tensor, ...]] | None,
              reduce_range: bool, large: bool = False) -> Path:
    """The int8 graph of the fp32 one at `path`, written beside it (a large one with its weights
    in external data there); returns its path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = path.with_suffix(".pre.onnx"), path.with_suffix(".int8.onnx")
    external = {"save_as_external_data": True, "all_tensors_to_one_file": True,
                "external_data_location": prepared.name + ".data"} if large else {}
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True, **external)
    from tiffin.tasks import TASKS

    # reduce_range (int8_settings): on x86 without VNNI, u8 x s8 products are summed in pairs into
    # saturating 16-bit lanes (VPMADDUBSW); 7-bit weights cannot overflow them (ONNX Runtime's docs)
    if not TASKS[spec.task].static_int8:
        quantize_dynamic(str(prepared), str(quantized), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, reduce_range=reduce_range, use_external_data_format=large)
    else:
        names = [i.name for i in spec.inputs]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{n: x.numpy() for n, x in zip(names, b)} for b in calibration or []])

            def get_next(self):
                return next(self.batches, None)

        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, use_external_data_format=large)
    return quantized


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
