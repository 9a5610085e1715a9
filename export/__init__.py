"""tiffin.export, the export stage: a trained model to an artifact folder, behind the parity gate.

The exporter of each format (formats.py over the contract's formats table; onnx_format.py,
torchscript_format.py, pt2_format.py), the graphs declared as data (specs.py), the parity gate
(parity.py), `tiffin export` (exporting.py, with source_model.py: the model exported and where
it came from; real_samples.py: check and calibration inputs from real media;
artifact_folder.py: the folder on disk), `tiffin check` (recheck.py), `tiffin benchmark`
(benchmark.py) and the commands (cli.py). The formats table, what tiffin.json holds, and its
one reader and writer are the contract's (tiffin/artifact_formats.py, tiffin/artifact_schema.py,
tiffin/artifact_json.py), so serving reads artifacts without this stage.

How it installs: pyproject.toml maps this top-level folder to `tiffin.export` ("tiffin.export" =
"export"), in a wheel and an editable checkout alike; import it as `tiffin.export.X`. It needs
the `export` extra (the `train` packages and onnx) and ONNX Runtime from `cpu` or `gpu`:
`pip install 'tiffin[export,cpu]'`. It imports the contract and tiffin.train (the models it
exports), never tiffin.serve, and is not in the serving wheel.
"""
