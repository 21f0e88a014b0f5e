"""Elastic ops and blocks: one full-size weight, sliced to the active size, `to_static()` copies."""

from nasplat.nn.blocks import BLOCKS, BasicBlock, Bottleneck, register_block
from nasplat.nn.elastic import ConvBN, ElasticBatchNorm2d, ElasticConv2d
from nasplat.nn.hrnet import DepthSequential, HRModule, HRNetTrunk, Transition

__all__ = [
    "BLOCKS",
    "BasicBlock",
    "Bottleneck",
    "ConvBN",
    "DepthSequential",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "HRModule",
    "HRNetTrunk",
    "Transition",
    "register_block",
]
