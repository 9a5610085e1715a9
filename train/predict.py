"""Models loaded for prediction: checkpoints, Hugging Face folders, embedded models and artifacts.

A checkpoint is read once and the network rebuilt from it alone (no data, no pretrained
weights); an artifact is opened on its runtime (tiffin.host, torch-free for ONNX). Either way
the result is a predictor of tiffin.host, the one path from files to top-k labels or
transcripts that serving uses too:
video, the mean softmax over `clips` clips spread over the whole video, each decoded and
centre-cropped as in validation; speech, greedy CTC transcripts, long recordings in windows.
Run: `tiffin predict runs/NAME/checkpoints/best.ckpt FILE...`.

torch is imported only where a PyTorch model is loaded: predicting with an ONNX artifact runs
where only the base install and onnxruntime are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiffin.errors import TiffinError
from tiffin.host import Predictor, SpeechPredictor, VideoPredictor, WaveLogits
from tiffin.spec import SpeechSpec, VideoSpec
from tiffin.train.backbones import EMBEDDED_MODELS


def torch_session(net: Any):
    """A PyTorch network called like a runtime session: numpy in, float32 numpy out."""
    import torch

    def run(*inputs: np.ndarray) -> np.ndarray:
        device = next(net.parameters()).device  # a model on a GPU (the Python API's) predicts there
        with torch.inference_mode():
            tensors = (torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs)
            return net(*tensors).float().cpu().numpy()

    return run


@dataclass
class LoadedVideoModel:
    """A network in eval mode with the spec it was trained with."""

    net: Any
    spec: VideoSpec
    backbone: str
    task = "video-classification"

    def predictor(self) -> VideoPredictor:
        return VideoPredictor(torch_session(self.net), self.spec, self.backbone)

    def preprocessing(self) -> dict[str, Any]:
        """What tiffin.json records of the preprocessing."""
        return self.spec.to_dict()


@dataclass
class LoadedSpeechModel:
    """A speech network in eval mode with its spec (rate, normalisation, vocabulary)."""

    net: Any
    spec: SpeechSpec
    backbone: str
    task = "speech-recognition"

    def predictor(self, windows_per_call: int | None = 8) -> SpeechPredictor:
        kernels, strides = tuple(self.net.kernels), tuple(self.net.strides)
        return SpeechPredictor(WaveLogits(torch_session(self.net), kernels, strides), self.spec, self.backbone,
                               kernels, strides, windows_per_call)

    def preprocessing(self) -> dict[str, Any]:
        """What tiffin.json records of the preprocessing: the spec, and the feature encoder's
        kernels and strides (which frames each utterance owns in a padded batch); not a log-mel
        front-end's settings, which the graph holds."""
        spec = {k: v for k, v in self.spec.to_dict().items() if k != "front_end"}
        return {**spec, "conv_stride": list(self.net.strides), "conv_kernel": list(self.net.kernels)}


LoadedModel = LoadedVideoModel | LoadedSpeechModel


def is_artifact(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "tiffin.json").is_file()


def with_decoder(predictor: Predictor, beam=None) -> Predictor:
    """`predictor`, decoding with beam search when `beam` (tiffin.ctc_beam.BeamOptions) is given,
    greedily when it is "greedy", as it came (an artifact's recorded decoder, else greedy) when None."""
    if beam is None:
        return predictor
    if beam == "greedy":
        if isinstance(predictor, SpeechPredictor):
            predictor.decoder = None
        return predictor
    if not isinstance(predictor, SpeechPredictor):
        raise TiffinError("--decoder beam: beam search decodes speech; this is a video model")
    predictor.use_beam(beam)
    return predictor


def load_model(path: str | Path) -> LoadedModel:
    """The PyTorch model of a checkpoint (read once), a Hugging Face speech folder or an embedded model.

    Raises:
        TiffinError: not a model tiffin reads, with what to give instead, or torch not installed.
    """
    try:
        return _load_model(path)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _TRAINING_PACKAGES:
            raise
        raise TiffinError(f"{path}: a PyTorch model needs {exc.name}, which is not installed: "
                          "pip install 'tiffin[train]' (ONNX artifacts run without it)") from None


# what reading a PyTorch model needs beyond the base install (the train extra)
_TRAINING_PACKAGES = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "transformers", "torchaudio",
                      "torchvision", "pytorchvideo", "torchmetrics")


def _load_model(path: str | Path) -> LoadedModel:
    name = str(path)
    if name in EMBEDDED_MODELS:
        return _load_embedded(name)
    path = Path(path)
    if is_artifact(path):
        raise TiffinError(f"{path}: is an exported artifact; give the checkpoint it was exported from")
    from tiffin.train.weights import hub_model, is_hub_id

    if is_hub_id(name):  # a Hugging Face model id: its snapshot, downloaded if missing
        path = hub_model(name)
    if path.is_dir():
        if (path / "config.json").is_file():
            from tiffin.train.video_hf import is_video_classifier

            return _load_hf_video(path, name) if is_video_classifier(path) else _load_hf_speech(path)
        raise TiffinError(f"{path}: not a model folder (no config.json); give a .ckpt or a save_pretrained folder")
    if not path.is_file():
        raise TiffinError(f"{path}: no such checkpoint; give one written by `tiffin train` or "
                          "`Trainer.save_checkpoint`, or a Hugging Face model folder")
    from tiffin.train.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(path)
    from tiffin.tasks import task_named

    loader = task_named(checkpoint["tiffin"].get("task", "video-classification"), str(path)).part("checkpoint_loader")
    try:
        return loader(checkpoint)
    except RuntimeError as exc:  # load_state_dict: weights shaped for other labels/vocabulary than the spec lists
        if "size mismatch" not in str(exc) and "state_dict" not in str(exc):
            raise
        raise TiffinError(f"{path}: its weights do not fit the model its spec describes (labels or vocabulary "
                          "of another size?); give the checkpoint as training wrote it") from None


def load_video_model(path: str | Path) -> LoadedVideoModel:
    """A video classifier (checkpoint or embedded name); TiffinError for any other model."""
    return _expect(load_model(path), LoadedVideoModel, path)


def load_speech_model(path: str | Path) -> LoadedSpeechModel:
    """A speech recogniser (checkpoint, Hugging Face folder or embedded name); TiffinError otherwise."""
    return _expect(load_model(path), LoadedSpeechModel, path)


def _expect(loaded: LoadedModel, kind: type, path: str | Path):
    if not isinstance(loaded, kind):
        raise TiffinError(f"{path}: is a {loaded.task} model, not {kind.task}")
    return loaded


def _with_weights(net: Any, checkpoint: dict) -> Any:
    """`net` with the network's weights of a Lightning checkpoint (the task holds it as `net`), in eval mode."""
    net.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
    return net.eval()


def video_from_checkpoint(checkpoint: dict) -> LoadedVideoModel:
    from tiffin.train.video_model import build_video_net

    meta = checkpoint["tiffin"]
    spec = VideoSpec.from_dict(meta["spec"])
    net = build_video_net(meta["backbone"], spec, model_config=meta.get("model_config"))
    return LoadedVideoModel(_with_weights(net, checkpoint), spec, meta["backbone"])


def speech_from_checkpoint(checkpoint: dict) -> LoadedSpeechModel:
    from tiffin.train.speech_model import build_speech_net

    meta = checkpoint["tiffin"]
    spec = SpeechSpec.from_dict(meta["spec"])
    return LoadedSpeechModel(_with_weights(build_speech_net(meta["model_config"], spec), checkpoint), spec,
                             meta["backbone"])


def _load_embedded(name: str) -> LoadedModel:
    """An embedded model by name, with its pretraining classes or vocabulary."""
    return {"video-classification": _embedded_video, "speech-recognition": _embedded_speech}[EMBEDDED_MODELS[name]](name)


def _embedded_video(name: str) -> LoadedVideoModel:
    from tiffin.train.video_lookup import get_video_backbone
    from tiffin.train.video_model import embedded_spec, load_embedded_net

    return LoadedVideoModel(load_embedded_net(name).eval(), embedded_spec(get_video_backbone(name)), name)


def _embedded_speech(name: str) -> LoadedSpeechModel:
    from tiffin.train.speech_model import SpeechNet, load_backbone

    model, vocab, _ = load_backbone(name, pretrained=True)
    spec = SpeechSpec(vocab=vocab.tokens)
    return LoadedSpeechModel(SpeechNet(model, spec).eval(), spec, name)


def _load_hf_video(path: Path, name: str) -> LoadedVideoModel:
    """A Hugging Face video classifier (a Hub id's snapshot or a folder) with its own labels."""
    from tiffin.train.video_hf import build, describe, own_labels
    from tiffin.train.video_model import VideoNet, make_spec

    info = describe(str(path))
    backbone = build(info, None, pretrained=True)
    labels = own_labels(backbone.model.config)
    if labels is None:
        raise TiffinError(f"{name}: its head has no named classes (id2label is LABEL_0...); fine-tune it on your "
                          "labels first (tiffin train video --backbone ...)")
    spec = make_spec(str(path), labels, info=info)  # described once: one config read per load
    return LoadedVideoModel(VideoNet(backbone, spec).eval(), spec, name)


def _load_hf_speech(path: Path) -> LoadedSpeechModel:
    """A Hugging Face save_pretrained speech model folder, offline."""
    from tiffin.train.speech_model import SpeechNet, load_backbone, speech_spec

    model, vocab, _ = load_backbone(str(path), pretrained=True)
    if vocab is None:
        raise TiffinError(f"{path}: has no vocab.json nor tokenizer.json; give a model folder with its tokenizer files")
    spec = speech_spec(path, model, vocab)
    return LoadedSpeechModel(SpeechNet(model, spec).eval(), spec, str(path))
