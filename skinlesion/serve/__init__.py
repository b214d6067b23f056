"""Serving a trained model: the Gradio app, its predictor (load the fold ensemble once, predict with
Grad-CAM) and the handling of untrusted uploads. No pipeline stage imports this subpackage.
`python -m skinlesion.serve` starts the app."""
