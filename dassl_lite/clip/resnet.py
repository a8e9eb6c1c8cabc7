"""CLIP's ModifiedResNet image encoder (RN50, RN101, RN50x4/16/64)."""
from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vit import check_image_size, num_prompt_tokens

__all__ = ["Bottleneck", "AttentionPool2d", "ModifiedResNet"]


class Bottleneck(nn.Module):
    """ResNet bottleneck whose stride is an average pool after the 3x3 conv (anti-aliased)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != out_planes:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, out_planes, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(out_planes)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(self.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """QKV attention pooling: the mean token attends over [mean, feature map] tokens.

    Only the mean token's output is used, so only its query is computed.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def _heads(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        return x.view(n, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        q, k, v = (self._heads(proj(t)) for proj, t in
                   ((self.q_proj, x[:, :1]), (self.k_proj, x), (self.v_proj, x)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.transpose(1, 2).flatten(1))

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation: projections ~ N(0, in_features**-0.5)."""
        std = self.c_proj.in_features ** -0.5
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(proj.weight, std=std)


class ModifiedResNet(nn.Module):
    """ResNet with a 3-conv stem + average pool, anti-aliased strides and attention pooling.

    It has no token sequence, so it takes no vision prompts.
    """

    def __init__(self, layers: Tuple[int, int, int, int], output_dim: int, heads: int,
                 input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.layers = tuple(layers)
        self.output_dim = output_dim
        self.heads = heads
        self.input_resolution = input_resolution
        self.width = width
        self.patch_size = None
        self.grid_size = input_resolution // 32
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, blocks in enumerate(self.layers):
            planes = width * 2 ** i
            stage = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.attnpool = AttentionPool2d(self.grid_size, width * 32, heads, output_dim)

    def stages(self) -> Tuple[nn.Sequential, ...]:
        """The four residual stages ``layer1`` .. ``layer4``."""
        return self.layer1, self.layer2, self.layer3, self.layer4

    def forward(self, images: Tensor, prompts: Optional[Tensor] = None,
                deep_prompts: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Encode images [B, 3, R, R] to [B, output_dim]; vision prompts are refused."""
        if num_prompt_tokens(prompts) or (deep_prompts is not None and len(deep_prompts)):
            raise ValueError(
                f"vision prompts need a ViT backbone (e.g. ViT-B/16); this model's image encoder "
                f"is a ModifiedResNet (RN50-style, layers={self.layers}, width={self.width}), "
                f"which has no token sequence to prompt. Use a ViT backbone or a text-only method.")
        check_image_size(images, self.input_resolution, "ModifiedResNet")
        x = images.to(self.conv1.weight.dtype)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        for stage in self.stages():
            x = stage(x)
        return self.attnpool(x)

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation: attention pool projections, zero last BN of each block."""
        self.attnpool.initialize_parameters()
        for stage in self.stages():
            for block in stage:
                nn.init.zeros_(block.bn3.weight)
