"""Latency as a cost: a lookup table of every building block a space's subnets run, timed on the
deployment backend (onnxruntime or eager torch), and a predictor that sums it for an arch.

Light parts (no torch) are re-exported here: `Unit`, `units_of`, `space_units`, `LatencyTable`,
`load_table`, `LatencyPredictor`, `fit_correction`. Timing and profiling need torch (and
onnxruntime for the ONNX backend): `nasplat.latency.timing` (`Timer`, `TimingSettings`,
`export_for_timing`, `machine`) and `nasplat.latency.profile` (`profile_space`).
"""

from nasplat.latency.predictor import LatencyPredictor, fit_correction
from nasplat.latency.table import LatencyTable, load_table
from nasplat.latency.units import Unit, space_units, units_of

__all__ = ["LatencyPredictor", "LatencyTable", "Unit", "fit_correction", "load_table", "space_units", "units_of"]
