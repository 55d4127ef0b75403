"""From a run to the world: the run report and run comparison (HTML pages that need nothing but a
browser), export to ONNX, the HTTP prediction server with dynamic batching, and the runs index.

Each module is used by the CLI and the Python API (``layerwise.report``, ``compare``, ``export``,
``serve``, ``runs``), never by the training loop, which only asks for the report at the end of a
run when ``run.report`` is on. (The package is not named ``serve``: a subpackage of that name would
replace the function ``layerwise.serve`` as soon as it was imported.)"""
