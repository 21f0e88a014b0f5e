from pathlib import Path

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"
