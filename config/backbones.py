"""The hyper-parameter schema of every backbone (`backbones.<name>:` in params.yaml), and their names.

A backbone's model lives in `models/<name>.py` and names its schema here (`Config = VBPRConfig`); the
schema also says which item features the backbone reads (`modalities`), so that params.yaml can be
checked without importing torch. Defaults equal params.yaml's values.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from config.strict import StrictConfig

MODALITIES = ("image", "text")


class BackboneConfig(StrictConfig):
    """A backbone's keys; `modalities`: the item features it reads (none: an ID-only reference)."""

    modalities: ClassVar[tuple[str, ...]] = ()


class PopConfig(BackboneConfig):
    """Pop has no keys."""


class DecayingLRConfig(BackboneConfig):
    """The learning-rate schedule keys of a DecayingLR backbone's config (MGCN, SOIL)."""

    lr_decay: float = Field(0.96, gt=0, le=1)  # the learning rate is multiplied by this ...
    lr_decay_epochs: int = Field(50, ge=1)     # ... every this many epochs (smoothly, epoch by epoch)


class BPRMFConfig(BackboneConfig):
    reg_weight: float = 1e-5  # L2 weight on the batch's user and item embeddings


class LightGCNConfig(BackboneConfig):
    n_layers: int = 3         # propagation layers L
    reg_weight: float = 1e-4  # L2 weight on the batch's layer-0 embeddings


class VBPRConfig(BackboneConfig):
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    reg_weight: float = 1e-5  # L2 weight on the batch's user and item vectors


class MMGCNConfig(BackboneConfig):
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    n_layers: int = 2                               # graph convolution layers per modality
    latent_dim: int = 256                           # width of projected features and user preferences
    combination: Literal["concat", "add"] = "concat"  # how a layer combines neighbours and the node itself
    reg_weight: float = 1e-4                        # L2 weight on the batch's ID embeddings and preferences


class DualGNNConfig(BackboneConfig):
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    user_k: int = 40              # co-occurring users aggregated per user
    n_layers: int = 2             # propagation layers on the user-item graph per modality
    hidden_dim: int = 256         # hidden width of the feature MLP (feat -> hidden -> d)
    reg_weight: float = 1e-4      # weight of the mean squared preferences and fusion weights


class FREEDOMConfig(BackboneConfig):
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    knn_k: int = 10               # neighbours per item in each modality's frozen kNN graph
    image_weight: float = 0.1     # weight of the image graph in the mixed item graph (text: 1 - it)
    dropout: float = 0.8          # share of user-item edges pruned each epoch (paper grid {0.8, 0.9})
    n_ui_layers: int = 2          # LightGCN layers on the user-item graph
    n_ii_layers: int = 1          # propagation layers on the frozen item-item graph
    modality_weight: float = 1e-4  # lambda: weight of the per-modality auxiliary BPR losses
    fused_weight: float = 1e-2    # weight of MRdIB's explicit fused L_S head (see the docstring)
    train_features: bool = True   # fine-tune the raw feature tables (as the reference code)


class MGCNConfig(DecayingLRConfig):  # + lr_decay, lr_decay_epochs
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    knn_k: int = 10               # neighbours per item in each modality's kNN graph
    n_ui_layers: int = 2          # LightGCN layers on the user-item graph
    n_ii_layers: int = 1          # propagation layers on the item-item graphs
    reg_weight: float = 1e-4      # L2 weight on the batch's final user/item representations
    cl_weight: float = 0.01       # weight of the side/content InfoNCE terms
    temperature: float = 0.2      # InfoNCE temperature
    train_features: bool = True   # fine-tune the raw feature tables (as the reference code)


class SOILConfig(DecayingLRConfig):  # + lr_decay, lr_decay_epochs
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    knn_k: int = 10                   # neighbours per item in each modality's similarity graph
    interest_k: int = 10              # interest items per user and modality (interest-aware item graphs)
    second_order_k: int = 10          # second-order items linked to each user
    second_order_weight: float = 0.5  # weight of the normalised second-order graph added to the user-item graph
    n_ui_layers: int = 2              # LightGCN layers on the augmented user-item graph
    n_ii_layers: int = 1              # propagation layers on the item-item graphs
    cl_weight: float = 0.01           # weight of the item-item level InfoNCE (side vs content views)
    cl_ui_weight: float = 0.01        # weight of the user-item level InfoNCE (user vs item views)
    temperature: float = 0.2          # InfoNCE temperature


BACKBONES: dict[str, type[BackboneConfig]] = {
    "pop": PopConfig,
    "bprmf": BPRMFConfig,
    "lightgcn": LightGCNConfig,
    "vbpr": VBPRConfig,
    "mmgcn": MMGCNConfig,
    "dualgnn": DualGNNConfig,
    "freedom": FREEDOMConfig,
    "mgcn": MGCNConfig,
    "soil": SOILConfig,
}
MULTIMODAL = [name for name, schema in BACKBONES.items() if schema.modalities]  # in the order above
