"""MLflow tracking of searches and the Pareto-front figures."""

from nasplat.tracking.mlflow_tracker import PARETO, MlflowTracker
from nasplat.tracking.plots import FrontPoint, pareto_html, pareto_png

__all__ = ["PARETO", "FrontPoint", "MlflowTracker", "pareto_html", "pareto_png"]
