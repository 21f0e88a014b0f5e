"""Configuration: experiment files and trainer recipes, validated once at the edge and frozen.

`load_experiment(path)` gives an `Experiment` (the space and the recipe loaded, every path
absolute); `load_trainer(path)` a `TrainerRecipe`. Inside the program these frozen values are
passed as they are: no component re-declares them.
"""

from nasplat.config.experiment import (
    ClusterConfig,
    DataConfig,
    EvolutionConfig,
    Experiment,
    ExperimentFile,
    GflopsBudget,
    LatencyProfileConfig,
    PredictorConfig,
    RetrainConfig,
    SearchConfig,
    SyntheticConfig,
    TrackingConfig,
    load_experiment,
)
from nasplat.config.recipe import (
    AugmentationConfig,
    BNRecalibrationConfig,
    CheckpointConfig,
    DistillationConfig,
    EvalConfig,
    HeadBoxConfig,
    LossConfig,
    OptimizerConfig,
    SandwichConfig,
    ScheduleConfig,
    TrainerRecipe,
    load_trainer,
)

__all__ = [
    "AugmentationConfig",
    "BNRecalibrationConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "DataConfig",
    "DistillationConfig",
    "EvalConfig",
    "EvolutionConfig",
    "Experiment",
    "ExperimentFile",
    "GflopsBudget",
    "HeadBoxConfig",
    "LatencyProfileConfig",
    "LossConfig",
    "OptimizerConfig",
    "PredictorConfig",
    "RetrainConfig",
    "SandwichConfig",
    "ScheduleConfig",
    "SearchConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainerRecipe",
    "load_experiment",
    "load_trainer",
]
