"""layerwise: deep networks built from simple layers, trained from one command."""

__version__ = "0.1.0"
