"""MLflow, in one room: the search tracker (a run per study, a nested run per trial, the Pareto
front as artifacts), the supernet training run, and the Pareto-front figures. Every writer uses an
`MlflowClient` with explicit run ids and redacts the tracking URI in its errors."""

from nasplat.tracking.mlflow_tracker import PARETO, MlflowTracker
from nasplat.tracking.plots import FrontPoint, pareto_html, pareto_png
from nasplat.tracking.retrain import RetrainTracker
from nasplat.tracking.training import TrainingTracker

__all__ = ["PARETO", "FrontPoint", "MlflowTracker", "RetrainTracker", "TrainingTracker", "pareto_html", "pareto_png"]
