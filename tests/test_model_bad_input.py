"""Bad checkpoints, configurations and case folders get one clear sentence and a non-zero exit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from zvperf.cli import main


def run_conform(case_dir, capsys) -> str:
    """Run ``zvperf conform`` on a broken case; return its one-line error after checking the exit and form."""
    assert main(["conform", str(case_dir)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert lines[0].startswith("zvperf conform: error: ")
    return lines[0]


def edit_checkpoint(case_dir, edit) -> None:
    path = case_dir / "model.pt"
    data = torch.load(path, weights_only=True)
    edit(data["model"])
    torch.save(data, path)


def test_checkpoint_with_a_missing_key(case_copy, capsys):
    edit_checkpoint(case_copy, lambda sd: sd.pop("fm_decoder.guidance_scale_embed.weight"))
    error = run_conform(case_copy, capsys)
    assert "model.pt does not match the ZipVoiceDistill architecture" in error
    assert "1 missing key(s) such as fm_decoder.guidance_scale_embed.weight" in error


def test_checkpoint_with_an_unexpected_key(case_copy, capsys):
    edit_checkpoint(case_copy, lambda sd: sd.__setitem__("fm_decoder.extra.weight", torch.zeros(3)))
    assert "1 unexpected key(s) such as fm_decoder.extra.weight" in run_conform(case_copy, capsys)


def test_checkpoint_with_a_wrong_shape(case_copy, capsys):
    edit_checkpoint(case_copy, lambda sd: sd.__setitem__("embed.weight", torch.zeros(41, 32)))
    error = run_conform(case_copy, capsys)
    assert "embed.weight is [41, 32] in the checkpoint but [40, 32] in the model" in error


def test_truncated_checkpoint(case_copy, capsys):
    path = case_copy / "model.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = run_conform(case_copy, capsys)
    assert f"{path}: not a readable PyTorch checkpoint, corrupt or truncated" in error


def test_garbage_checkpoint(case_copy, capsys):
    (case_copy / "model.pt").write_bytes(b"this is not a checkpoint")
    assert "not a readable PyTorch checkpoint" in run_conform(case_copy, capsys)


def test_checkpoint_holding_pickled_objects(case_copy, capsys):
    torch.save({"model": {"x": torch.zeros(1)}, "params": object.__new__(_Params)}, case_copy / "model.pt")
    assert "holds more than tensors" in run_conform(case_copy, capsys)


class _Params:
    """Stands for a training-time object pickled into a checkpoint."""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.pop("pos_dim"), "key 'pos_dim' is missing from the \"model\" section"),
        (lambda m: m.__setitem__("use_flash", True), "unknown key 'use_flash' in the \"model\" section"),
        (lambda m: m.__setitem__("fm_decoder_dim", "big"), "fm_decoder_dim must be a positive integer, not 'big'"),
        (lambda m: m.__setitem__("fm_decoder_num_layers", [1, 1]), "fm_decoder_num_layers has 2 entries"),
    ],
    ids=["missing", "unknown", "not-an-int", "inconsistent"],
)
def test_bad_model_json(case_copy, capsys, edit, expected):
    path = case_copy / "model.json"
    config = json.loads(path.read_text())
    edit(config["model"])
    path.write_text(json.dumps(config))
    error = run_conform(case_copy, capsys)
    assert str(path) in error and expected in error


def test_model_json_that_is_not_json(case_copy, capsys):
    (case_copy / "model.json").write_text("{model: ")
    assert "model.json: not valid JSON" in run_conform(case_copy, capsys)


@pytest.mark.parametrize("name", ["model.pt", "case.json", "tensors.safetensors", "model.json"])
def test_case_folder_missing_a_file(case_copy, capsys, name):
    (case_copy / name).unlink()
    assert f"{case_copy}: case folder has no {name}." in run_conform(case_copy, capsys)


def test_case_folder_missing_a_tensor(case_copy, capsys):
    path = case_copy / "tensors.safetensors"
    tensors = load_file(str(path))
    del tensors["fm_velocity"]
    save_file(tensors, str(path))
    assert "tensor 'fm_velocity' is missing" in run_conform(case_copy, capsys)


def test_case_json_missing_a_key(case_copy, capsys):
    path = case_copy / "case.json"
    info = json.loads(path.read_text())
    del info["t_shift"]
    path.write_text(json.dumps(info))
    assert "key 't_shift' is missing" in run_conform(case_copy, capsys)


def test_case_folder_that_does_not_exist(tmp_path, capsys):
    assert "case folder not found" in run_conform(tmp_path / "nowhere", capsys)
