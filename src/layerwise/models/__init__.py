"""Model families, their registry and analytic costs.

    from layerwise.models import create_model, list_models
    model = create_model("resnet20", in_shape=(3, 32, 32), num_classes=10)
"""

# Importing the family modules registers their models.
from .actor_critic import ActorCritic, actor_critic_cost
from .base import Model
from .convnet import ConvNet, convnet_cost
from .fno import CNN1d, FNO, cnn1d_cost, fno_cost
from .mlp import MLP, mlp_cost
from .recsys import AutoRec, MatrixFactorization, NeuMF
from .mpnn import MPNN, mpnn_cost
from .registry import create_model, list_models, model_arg_types, model_args, register_model
from .resnet import BasicBlock, Bottleneck, ResNet, resnet_cost
from .text import NGramBag, TextTransformer
from .transformer import GPT, ViT

__all__ = [
    "ActorCritic",
    "AutoRec",
    "CNN1d",
    "FNO",
    "GPT",
    "MatrixFactorization",
    "NeuMF",
    "MLP",
    "MPNN",
    "NGramBag",
    "TextTransformer",
    "BasicBlock",
    "Bottleneck",
    "ConvNet",
    "Model",
    "ResNet",
    "ViT",
    "actor_critic_cost",
    "cnn1d_cost",
    "convnet_cost",
    "create_model",
    "list_models",
    "fno_cost",
    "mlp_cost",
    "mpnn_cost",
    "model_arg_types",
    "model_args",
    "register_model",
    "resnet_cost",
]
