"""One subnet of a trained supernet: BN recalibration, evaluation on the validation set (cached
crops, flip test, the official whole-body AP), export as a static model that loads without the
supernet, and the whole-body objective that the search runs in its evaluators.

Depends on `train/` only for the supernet checkpoint format and the training crops (BN
calibration); `search/` depends on none of this, only on the `Objective` interface it implements.
"""

from nasplat.subnet.bn import batchnorm_modules, recalibrate_bn
from nasplat.subnet.evaluator import CropCache, SubnetEvaluator, latest_checkpoint, load_supernet
from nasplat.subnet.export import export_subnet, load_exported
from nasplat.subnet.objective import WholeBodyFactory, WholeBodyObjective

__all__ = [
    "CropCache",
    "SubnetEvaluator",
    "WholeBodyFactory",
    "WholeBodyObjective",
    "batchnorm_modules",
    "export_subnet",
    "latest_checkpoint",
    "load_exported",
    "load_supernet",
    "recalibrate_bn",
]
