"""The export folder: the ONNX graph matches PyTorch on the validation crops, the metadata and the
model card say what the subnet is, and a given (e.g. retrained) network is exported as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_tiny):
    from nasplat.subnet.export import LatencyPlan, export_subnet

    out = tmp_path_factory.mktemp("export") / "best"
    # one thread: two OpenMP threads on a busy 2-core machine are an order of magnitude slower
    plan = LatencyPlan(batches=(1, 2), runs=2, threads=1, warmup=1)
    meta = export_subnet(trained_tiny, trained_tiny.space.min_arch(), out, origin={"study": "tiny-study", "trial": 7},
                         latency=plan)
    return out, meta


def test_onnx_graph_matches_pytorch_on_the_validation_crops(exported, trained_tiny):
    out, meta = exported
    v = meta["onnx"]["verification"]
    assert v["crops"] > 0
    assert v["max_heatmap_abs_diff"] <= 1e-5
    assert v["argmax_agreement"] == 1.0
    assert json.loads((out / "meta.json").read_text())["onnx"] == meta["onnx"]


def test_the_onnxruntime_optimised_copy_is_recorded_with_its_version_and_matches_pytorch(exported):
    import onnxruntime as ort

    from nasplat.subnet.export import onnx_model_file

    out, meta = exported
    o = meta["onnx"]["optimized"]
    assert o["file"] == "model.ort.onnx" and (out / o["file"]).is_file()
    assert o["onnxruntime"] == ort.__version__
    assert o["max_heatmap_abs_diff"] <= 1e-5 and o["argmax_agreement"] == 1.0
    assert onnx_model_file(out) == out / "model.ort.onnx"
    assert "model.ort.onnx" in (out / "MODEL_CARD.md").read_text()


def test_onnx_graph_is_checked_opset_17_with_a_free_batch_and_reproduces_the_weights(exported):
    import onnx

    from nasplat.subnet.export import load_exported
    from nasplat.subnet.onnx_export import onnx_session, run_onnx

    out, meta = exported
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    net = load_exported(out)
    session = onnx_session(out / "model.onnx", threads=1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, *meta["input_size"], generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = net(x)
        got = run_onnx(session, x)
        for a, b in zip(want, got):
            assert a.shape == b.shape
            assert float((a - b).abs().max()) <= 1e-5


def test_meta_and_model_card_say_what_the_subnet_is(exported, trained_tiny):
    out, meta = exported
    assert meta["origin"] == {"study": "tiny-study", "trial": 7}
    assert set(meta["metrics"]) == {"body", "foot", "face", "hand", "wholebody"}
    assert meta["val"]["persons"] == meta["onnx"]["verification"]["crops"]  # 3 images: all crops verified
    assert set(meta["latency"]["batches"]) == {"1", "2"}
    card = (out / "MODEL_CARD.md").read_text()
    for text in ("tiny-study", "trial 7", f"{meta['gflops']['face']:.4f}", f"{meta['params']:,}",
                 f"{meta['metrics']['wholebody']['AP']:.3f}", "onnxruntime", meta["val"]["annotations"],
                 str(trained_tiny.trainer_path), "opset 17"):
        assert text in card, text


def test_a_given_network_is_exported_as_it_is(tmp_path, trained_tiny):
    from nasplat.models import build_static
    from nasplat.subnet.export import export_subnet, load_exported

    arch = trained_tiny.space.max_arch()
    net = build_static(arch, trained_tiny.space.all_blocks_per_module(), seed=3).eval()
    metrics = {p: {"AP": 0.5, "AR": 0.6} for p in ("body", "foot", "face", "hand", "wholebody")}
    meta = export_subnet(trained_tiny, arch, tmp_path / "retrained", net=net, metrics=metrics, onnx=False)
    assert meta["metrics"] == metrics and meta["checkpoint"] is None
    assert not (tmp_path / "retrained" / "model.onnx").exists()
    assert not (tmp_path / "retrained" / "model.ort.onnx").exists()
    loaded = load_exported(tmp_path / "retrained")
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert "Not measured" in (tmp_path / "retrained" / "MODEL_CARD.md").read_text()


def test_a_network_of_another_arch_is_refused(tmp_path, trained_tiny):
    from nasplat.errors import TrainingError
    from nasplat.models import build_static
    from nasplat.subnet.export import export_subnet

    net = build_static(trained_tiny.space.max_arch(), trained_tiny.space.all_blocks_per_module())
    with pytest.raises(TrainingError, match="not the arch"):
        export_subnet(trained_tiny, trained_tiny.space.min_arch(), tmp_path / "x", net=net)
    assert not (tmp_path / "x").exists()


def test_verification_reports_a_mismatch(exported):
    """The check itself: a graph of other weights is reported as different."""
    from nasplat.models import build_static
    from nasplat.subnet.export import read_export
    from nasplat.subnet.onnx_export import onnx_session, verify_onnx

    out, meta = exported
    arch, bpm, _ = read_export(out)
    other = build_static(arch, bpm, seed=123).eval()
    crops = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, *meta["input_size"]), dtype=np.float32))
    v = verify_onnx(other, onnx_session(out / "model.onnx", threads=1), crops)
    assert v["max_heatmap_abs_diff"] > 1e-5
