"""Training on many processes with torch.distributed: the mesh (parallel), the per-family
rewrite of a model (parallelize), sharded checkpoints (checkpoint) and the launcher (launch).

Nothing in layerwise.models or layerwise.nn imports torch.distributed; parallelism is applied
to a built model from here (README: Scaling out).
"""

from layerwise.distributed.parallel import DistributedError, Parallel, ParallelDims

__all__ = ["DistributedError", "Parallel", "ParallelDims"]
