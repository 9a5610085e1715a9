"""tiffin.serve, the serving stage, torch-free: BentoML services over an artifact's ONNX file.

The video and speech services (video.py, speech.py) and the model they hold (served_model.py),
their settings, upload limits and OpenAPI document, the BentoML patches, `tiffin serve` and
`tiffin build` (commands.py, cli.py), the serving wheel (wheel.py), Docker images
(container.py, Dockerfile.template) and a server as a child process (server.py).

How it installs: pyproject.toml maps this top-level folder to `tiffin.serve` ("tiffin.serve" =
"serve"; bentofile.yaml and Dockerfile.template ship as package data), so it is imported as
`tiffin.serve.X` in a checkout, a wheel and a bento alike: `pip install 'tiffin[serve,cpu]'` (or
`serve,gpu`). It imports the contract (tiffin/) only, never tiffin.train or tiffin.export; a
bento installs it with the contract alone, from the wheel serve/wheel.py writes.
"""
