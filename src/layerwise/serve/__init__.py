"""From a run to the world: the run report and run comparison (HTML pages that need nothing but a
browser), export to ONNX, the HTTP prediction server with dynamic batching, and the runs index.

Each module is used by the CLI and the Python API, never by the training loop (which only asks
for the report at the end of a run when ``run.report`` is on)."""
