"""The models reproduce the official ones: conformance vectors, state_dict layout, solver plan."""

from __future__ import annotations

import copy
import inspect
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import CASE_DIRS, CONFORMANCE, tiny_config, tiny_weights
from zvperf.cli import main
from zvperf.engine.config import ModelConfig
from zvperf.engine.conformance import load_case, run_case
from zvperf.engine.models import DecoderStep, ZipVoice, ZipVoiceDistill, frame_token_index, ratio_durations
from zvperf.engine.pipeline import Synthesizer
from zvperf.engine.solver import nfe, plan_steps, time_schedule
from zvperf.engine.zipformer import BiasNorm
from zvperf.models import ZipVoice as PublicZipVoice

MANIFEST = json.loads((CONFORMANCE / "manifest_zipvoice_base.json").read_text())


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=lambda p: p.name)
def test_conformance_cases_reproduce_the_reference(case_dir):
    checks = run_case(load_case(case_dir))
    assert [c.name for c in checks] == ["text_condition", "fm_velocity", "x1"]
    for check in checks:
        assert check.passed, f"{check.name}: error {check.error:.2e} > {check.tolerance:.0e}"


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=lambda p: p.name)
def test_conform_command_passes_on_shared_cases(case_dir, capsys):
    assert main(["conform", str(case_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 3 and "FAIL" not in out


@pytest.mark.parametrize("tensor", ["x1", "fm_velocity", "text_condition"])
def test_conform_command_fails_on_an_altered_case(case_copy, tensor, capsys):
    path = case_copy / "tensors.safetensors"
    tensors = load_file(str(path))
    valid = tensors["padding_mask"] == 0
    bumped = tensors[tensor].clone()
    bumped[valid] += 0.05  # far above every fp32 tolerance
    tensors[tensor] = bumped
    save_file(tensors, str(path))
    assert main(["conform", str(case_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{tensor:<15}" in out and "FAIL" in out


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=lambda p: p.name)
def test_half_precision_stays_within_its_tolerance_of_the_reference(case_dir, precision):
    for check in run_case(load_case(case_dir), precision=precision):
        assert check.passed, f"{precision} {check.name}: error {check.error:.2e} > {check.tolerance:.0e}"


def test_half_precision_bias_norm_keeps_its_statistics_in_fp32():
    """Activations beyond |x| = 256 square past fp16's range: the mean of squares must not be taken in fp16."""
    torch.manual_seed(0)
    norm = BiasNorm(64)
    with torch.no_grad():
        norm.bias.normal_()
    x = torch.randn(2, 5, 64) * 1000
    expected = norm(x)
    for dtype in (torch.float16, torch.bfloat16):
        got = copy.deepcopy(norm).to(dtype)(x.to(dtype)).float()
        assert torch.isfinite(got).all()
        assert (got - expected).abs().max() <= 2e-2 * expected.abs().max()


class _DtypesOf(TorchDispatchMode):
    """Records the dtype each watched operator computes in."""

    WATCHED = {"softmax", "softplus", "mean", "pow", "rsqrt"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.WATCHED:
            self.seen.setdefault(name, set()).add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_runs_softmax_softplus_and_normalisation_in_fp32(dtype):
    """As autocast does for the official model: the decoder step in half precision, with these operators
    (and nothing else measured here) in fp32."""
    case = load_case(CASE_DIRS[1])
    model = case.build_model().to(dtype)
    t = case.tensors
    frames = t["x0"].shape[1]
    step = DecoderStep(model.fm_decoder, model.feat_dim, guided=False)
    constant = torch.randn(t["x0"].shape[0], frames, model.config.fm_decoder_dim, dtype=dtype)
    conditioning = torch.randn(1, model.config.time_embed_dim, dtype=dtype)
    recorder = _DtypesOf()
    with torch.inference_mode(), recorder:
        out = step(t["x0"].to(dtype), constant, t["padding_mask"].bool(), conditioning, torch.tensor([0.25, 0.0]))
    assert out.dtype == dtype
    assert set(recorder.seen) == _DtypesOf.WATCHED
    assert all(dtypes == {torch.float32} for dtypes in recorder.seen.values()), recorder.seen


@pytest.mark.parametrize("build", ["synthesizer", "conformance"])
def test_fp32_configurations_turn_tf32_off(build):
    """torch allows TF32 in cuDNN convolutions by default; an fp32 reference must not use it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        if build == "synthesizer":
            Synthesizer(tiny_weights("zipvoice_distill"), "cpu", "fp32")
        else:
            run_case(load_case(CASE_DIRS[0]))
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_public_import_path_and_constructor_keywords():
    assert PublicZipVoice is ZipVoice
    assert set(MANIFEST["config"]["model"]) == set(ModelConfig.keys())
    model = ZipVoiceDistill(vocab_size=40, pad_id=0, **json.loads((CASE_DIRS[0] / "model.json").read_text())["model"])
    assert model.embed.weight.shape == (40, 32)
    assert {"vocab_size", "pad_id"} <= set(inspect.signature(ZipVoice).parameters)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ZipVoice, ZipVoiceDistill], ids=["zipvoice", "zipvoice_distill"])
def test_full_size_state_dict_matches_the_manifest(cls):
    expected = MANIFEST[cls.name]
    model = cls(vocab_size=MANIFEST["vocab_size_used"], pad_id=0, **MANIFEST["config"]["model"])
    layout = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert layout == expected["tensors"]
    assert len(layout) == expected["num_state_tensors"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]
    assert expected["num_params"] == {"zipvoice": 122_664_804, "zipvoice_distill": 122_701_668}[cls.name]


def test_time_schedule_is_the_shifted_linspace():
    times = time_schedule(4, 0.5)
    for k, t in enumerate(times):
        u = k / 4
        assert t == pytest.approx(0.5 * u / (1 - 0.5 * u), abs=1e-7)
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.0)


def test_cfg_plan_doubles_guidance_before_half_time_and_drops_speech_after():
    steps = plan_steps(4, 0.5, guidance_scale=1.0, doubled_batch_cfg=True)
    # shifted times 0, 1/7, 1/3, 3/5: only the last step is past t = 0.5
    assert [s.uncond_keeps_speech for s in steps] == [True, True, True, False]
    assert [s.guidance for s in steps] == [2.0, 2.0, 2.0, 1.0]
    assert nfe(steps) == 8
    assert nfe(plan_steps(16, 0.5, 1.0, doubled_batch_cfg=True)) == 32
    assert nfe(plan_steps(8, 0.5, 3.0, doubled_batch_cfg=False)) == 8
    assert nfe(plan_steps(4, 0.5, 0.0, doubled_batch_cfg=True)) == 4


def test_solve_reads_nothing_back_from_the_device(monkeypatch):
    """Every branch of the solve is decided on the host: no tensor is turned into a Python value."""
    case = load_case(CASE_DIRS[0])
    model = case.build_model()
    t = case.tensors
    mask = t["padding_mask"].bool()
    args = (t["x0"], t["text_condition"], t["speech_condition"], mask, 4, 1.0, 0.5)
    model.solve(*args)  # warm the caches the first call fills

    def refuse(*_a, **_k):
        raise AssertionError("host read of a tensor value inside the solve")

    for name in ("__bool__", "item", "tolist", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with torch.inference_mode():
        model.solve(*args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_solve_on_cuda_has_no_synchronising_call():
    case = load_case(CASE_DIRS[1])
    model = case.build_model().cuda()
    t = {k: v.cuda() for k, v in case.tensors.items()}
    args = (t["x0"], t["text_condition"], t["speech_condition"], t["padding_mask"].bool(), 4, 3.0, 0.5)
    model.solve(*args)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            model.solve(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_ratio_duration_rule_by_hand():
    # 23 prompt frames for 5 prompt tokens, 9 text tokens: 23 + ceil(23 / 5 * 9) = 23 + ceil(41.4) = 65
    assert ratio_durations([23, 17], [5, 4], [9, 6], 1.0) == [65, 43]
    # speed 2 halves the generated part: 23 + ceil(20.7) = 44
    assert ratio_durations([23], [5], [9], 2.0) == [44]
    # slower speech: 20 + ceil(20 / 4 * 3 / 0.5) = 20 + 30
    assert ratio_durations([20], [4], [3], 0.5) == [50]


def test_frame_token_index_by_hand():
    # 7 frames for 3 tokens: 2 frames each, the 7th frame reads the appended pad (position 3);
    # the second utterance (5 frames, 2 tokens) is padded to 7 frames, padding reads its pad too.
    index = frame_token_index([7, 5], [3, 2], 7)
    assert index.tolist() == [[0, 0, 1, 1, 2, 2, 3], [0, 0, 1, 1, 2, 2, 2]]
    # more tokens than frames: every frame reads the pad
    assert frame_token_index([2], [3], 2).tolist() == [[3, 3]]


@pytest.mark.parametrize("model_name", ["zipvoice", "zipvoice_distill"])
def test_synthetic_weights_start_residual_branches_small_as_the_official_initialisation_does(model_name):
    """Each of the official initial scales reaches the layers it names (a renamed layer would silently lose it),
    and those layers' weights and biases lie within the scale times torch's default bounds."""
    from zvperf.engine import weights

    config = tiny_config()
    model, _ = weights.synthetic_model(model_name, config=config)
    unscaled = type(model).from_config(config, vocab_size=model.vocab_size, pad_id=model.pad_id)
    scaled_any = {pattern.pattern: False for pattern, _ in weights._OFFICIAL_INIT_SCALES}
    for name, module in model.named_modules():
        for pattern, scale_of in weights._OFFICIAL_INIT_SCALES:
            if not pattern.search(name):
                continue
            scaled_any[pattern.pattern] = True
            scale = scale_of(config)
            assert float(module.weight.abs().max()) <= scale * module.weight.shape[1] ** -0.5 + 1e-7, name
            if module.bias is not None:
                assert float(module.bias.abs().max()) <= 0.1 * scale, name
    expected = {p for p in scaled_any if "guidance" not in p or model_name == "zipvoice_distill"}
    assert {p for p, found in scaled_any.items() if found} == expected
    # and the rest keeps torch's default initialisation: an input projection is no smaller than a default one
    name = "fm_decoder.encoders.0.layers.0.feed_forward1.in_proj"
    default = dict(unscaled.named_modules())[name].weight
    assert float(dict(model.named_modules())[name].weight.abs().max()) > 0.5 * float(default.abs().max())
