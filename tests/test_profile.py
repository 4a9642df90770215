"""``zvperf profile CONFIG``: the top operators of one solve, from torch's profiler or ONNX Runtime's."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from tests.helpers import tiny_weights, write_official_dir
from zvperf.cli import main
from zvperf.engine.device import cpu_half_missing
from zvperf.errors import ZvperfError
from zvperf.suite.matrix import Combo, parse_combo


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    for model in ("zipvoice", "zipvoice_distill"):
        write_official_dir(tiny_weights(model), root / model)
    return root


@pytest.mark.parametrize(
    "combo",
    [
        Combo("zipvoice_distill", 4, "ort-cpu", "fp32", 843),
        Combo("zipvoice", 16, "torch", "bf16"),
        Combo("zipvoice_distill", 2, "ort-int8", "int8", 1000, 4),
        Combo("zipvoice", 8, "official", "fp32", None, 2),
        Combo("zipvoice_distill", 4, "official-onnx", "int8"),
        Combo("zipvoice", 16, "official-trt", "fp16", 1000),
    ],
    ids=lambda c: c.id,
)
def test_a_configuration_id_reads_back_as_its_combination(combo):
    assert parse_combo(combo.id) == combo


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zipvoice_distill-4step-warp-fp32", "is not a configuration: expected MODEL-NSTEP-BACKEND-PRECISION"),
        ("zipvoice_distill-4-torch-fp32", "is not a configuration"),
        ("zipvoice_distill-0step-torch-fp32", "is not a configuration"),
        ("zipvoice_distill-4step-torch-fp32-8f", "8 frames is below the shortest decoder input, 16"),
    ],
)
def test_bad_configurations_are_named(text, message):
    with pytest.raises(ZvperfError, match=message):
        parse_combo(text)


def test_the_profile_command_refuses_a_bad_configuration_in_one_line(capsys):
    assert main(["profile", "distill-4step"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("zvperf profile: error: 'distill-4step' is not a configuration")


def profiled(capsys, tiny_dir, config: str) -> tuple[str, dict[str, list[str]]]:
    threads = torch.get_num_threads()
    try:
        assert main(["profile", config, "--weights", str(tiny_dir), "--top", "6", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    header, columns, _, *lines = capsys.readouterr().out.strip().splitlines()
    assert columns.split() == ["operator", "calls", "ms", "share", "GFLOP/s"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return header, {name: cells for name, *cells in rows}


@pytest.mark.parametrize(
    ("config", "product"),
    [
        ("zipvoice_distill-2step-torch-fp32-100f", "mkldnn::_linear_pointwise"),
        ("zipvoice-2step-torch-bf16-100f", "aten::addmm"),
    ],
)
def test_a_torch_backend_is_profiled_by_operator_with_flop_rates(capsys, tiny_dir, config, product):
    if "bf16" in config and (reason := cpu_half_missing("bf16")):
        pytest.skip(reason)
    header, rows = profiled(capsys, tiny_dir, config)
    assert header.startswith(f"{config} on cpu (1 threads): one solve of 2 steps took ")
    assert "under torch.profiler" in header
    assert len(rows) == 7 and re.fullmatch(r"\(\d+ other operators\)", list(rows)[-1])
    shares = [float(cells[2].rstrip("%")) for cells in rows.values()]
    assert sum(shares) == pytest.approx(100, abs=0.5) and shares[:6] == sorted(shares[:6], reverse=True)
    assert product in rows and float(rows[product][3]) > 0  # a matrix product with its FLOP rate


def test_an_onnx_runtime_backend_is_profiled_by_its_own_profiler(capsys, tiny_dir):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    calls = {}
    for steps in (1, 2):
        header, rows = profiled(capsys, tiny_dir, f"zipvoice-{steps}step-ort-cpu-fp32-100f-b2")
        assert "under ONNX Runtime's profiler" in header
        assert "MatMul" in rows and float(rows["MatMul"][3]) > 0
        assert "Softplus" not in rows  # the export writes softplus out as Exp, Log and Where
        calls[steps] = {name: int(cells[0]) for name, cells in rows.items() if not name.startswith("(")}
    # Only the profiled solve is counted (its warm-up ran on the same sessions): twice the steps, twice the calls.
    shared = calls[1].keys() & calls[2].keys()
    assert "MatMul" in shared and all(calls[2][name] == 2 * calls[1][name] for name in shared)


def test_cuda_kernels_are_counted_per_decoder_step_by_class():
    """Kernel names in the patterns of cuBLAS and CUTLASS products, PyTorch's elementwise, copy and reduction
    templates, its depthwise convolution and Triton's fused kernels (written from those libraries' naming, not read
    from a GPU: the first GPU check shows the real ones)."""
    from zvperf.suite.profiling import Profile, kernel_class, kernel_classes

    names = {
        "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64": "matrix products",
        "void cutlass::Kernel2<cutlass_80_wmma_tensorop_f16_s161616gemm_f16>": "matrix products",
        "void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add<c10::Half>>": "elementwise",
        "void at::native::unrolled_elementwise_kernel<direct_copy_kernel_cuda>": "copies and casts",
        "void at::native::reduce_kernel<512, 1, ReduceOp<float, MeanOps<float, float>>>": "norm, softmax, reduction",
        "void (anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>": "norm, softmax, reduction",
        "void at::native::conv_depthwise2d_forward_kernel<1, c10::Half, int>": "convolution",
        "triton_poi_fused_add_mul_softplus_sub_0": "elementwise",
        "triton_red_fused_mean_pow_rsqrt_sub_1": "norm, softmax, reduction",
    }
    assert {name: kernel_class(name) for name in names} == names
    classes = kernel_classes([(name, 1e-5) for name in names] * 4)  # a 4-step solve
    assert [(c.name, c.kernels) for c in classes] == [
        ("matrix products", 8), ("convolution", 4), ("norm, softmax, reduction", 12), ("copies and casts", 4),
        ("elementwise", 8),
    ]  # fmt: skip
    profile = Profile(parse_combo("zipvoice_distill-4step-torch-fp16"), "cuda", "torch.profiler", 0.01, [], classes, 4)
    lines = profile.kernel_lines()
    assert lines[1] == "device kernels: 36 in the solve, 9 per decoder step"
    assert any(line.startswith("elementwise") and " 2 " in line and "22.2%" in line for line in lines)
    assert Profile(profile.combo, "cpu", "torch.profiler", 0.01, []).kernel_lines() == []  # a CPU run has none
