"""tiffin.train, the training stage: fine-tuning video classifiers and speech recognisers.

Backbone tables, readers of the published dataset layouts, data modules, LightningModules and
the run folder a `tiffin.Trainer` keeps, checkpoint loading (what predict, evaluate and export
read), evaluation, pretraining recipes, synthetic corpora, and the embedded models
(train/embedded/, shipped as package data).

How it installs: this folder sits at the top of the repository and pyproject.toml maps it to
`tiffin.train` ([tool.setuptools] packages and package-dir: "tiffin.train" = "train"), in a
wheel and in an editable checkout alike, so it is imported as `tiffin.train.X`, never as
`train.X`. Its torch-free dataset readers aside, it needs the `train` extra (torch, Lightning,
PyTorchVideo, transformers): `pip install 'tiffin[train]'`. It imports the contract (tiffin/),
never tiffin.export or tiffin.serve (tests/test_layout.py), and is not in the serving wheel.
"""
