"""The choices of training options, in a module that imports nothing heavy (no torch, no PyAV),
so the CLI builds its enums from them and `tiffin --help` stays fast; the code that acts on a
choice checks it against the same tuple."""

# how training clips are drawn from a video (train/video_data.py, `--clip-sampler`)
CLIP_SAMPLERS = ("random", "uniform", "constant_clips_per_video")
# where a fine-tuned speech model's vocabulary comes from (tiffin.speech.SpeechRecognition, `--vocab`)
VOCAB_CHOICES = ("from-backbone", "from-data")
