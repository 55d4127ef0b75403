"""From a run to the world: the run report and run comparison (HTML pages that need nothing but a
browser), export to ONNX, the HTTP prediction server with dynamic batching, and the runs index.

Each module is used by the CLI and the Python API, never by the training loop (which only asks
for the report at the end of a run when ``run.report`` is on)."""


import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """Makes ``layerwise.serve(run, host=..., port=..., ...)`` the blocking server call while
    ``layerwise.serve`` stays the package (a module's ``__class__`` may be set to a ModuleType
    subclass: Python reference, "Customizing module attribute access")."""

    def __call__(self, run, host="127.0.0.1", port=8000, **settings):
        """Serve a run's model over HTTP until SIGTERM or Ctrl-C (``layerwise serve``; blocking):
        POST /predict, GET /health, GET /metadata, with dynamic batching. ``run``: a run directory,
        a model.safetensors file or ``pretrained:NAME``; ``settings``: the keyword arguments of
        :func:`layerwise.serve.server.serve` (an unknown one is a TypeError). For tests and
        embedding, :func:`layerwise.serve.server.create_app` builds the ASGI app without running it."""
        from layerwise.serve.server import serve

        return serve(run, host, port, **settings)


_sys.modules[__name__].__class__ = _CallableModule
