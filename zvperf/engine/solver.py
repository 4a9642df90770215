"""The Euler ODE solve of flow matching, planned entirely on the host.

Every decision of the official solver that depends on the time step (the schedule, whether a
step needs classifier-free guidance, whether the unconditional branch keeps the speech prompt,
the effective guidance scale) depends only on numbers known before the loop. Planning them here,
as Python floats, means the loop never reads a value back from the GPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import torch

from zvperf.engine.audio import FRAMES_PER_SECOND


@functools.lru_cache(maxsize=128)
def time_schedule(num_step: int, t_shift: float, t_start: float = 0.0, t_end: float = 1.0) -> tuple[float, ...]:
    """num_step + 1 times from t_start to t_end, warped by s*t / (1 + (s-1)*t) with s = t_shift.

    Computed with torch in float32 like the reference, so that t > 0.5 tests and step sizes agree bit
    for bit; cached, since a benchmark asks for the same few schedules over and over.
    """
    if num_step < 1:
        raise ValueError(f"num_step must be at least 1, got {num_step}")
    if t_shift <= 0:
        raise ValueError(f"t_shift must be positive, got {t_shift}")
    t = torch.linspace(t_start, t_end, num_step + 1, dtype=torch.float32)
    return tuple((t_shift * t / (1 + (t_shift - 1) * t)).tolist())


@dataclasses.dataclass(frozen=True)
class Step:
    """One Euler step: evaluate the velocity at ``t`` and move by ``dt``.

    ``guidance`` is the classifier-free guidance weight g of v = (1+g) v_cond - g v_uncond (0: a
    single conditional pass). ``uncond_keeps_speech`` says whether the unconditional branch still
    sees the speech prompt (it does early in the schedule, where g is doubled instead).
    """

    t: float
    dt: float
    guidance: float
    uncond_keeps_speech: bool


def plan_steps(num_step: int, t_shift: float, guidance_scale: float, doubled_batch_cfg: bool) -> list[Step]:
    """The steps of one solve. With ``doubled_batch_cfg`` (zipvoice) guidance is applied by the solver;
    otherwise (zipvoice_distill) the model takes the scale as an input and every step is one pass."""
    times = time_schedule(num_step, t_shift)
    steps = []
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        dt = t_next - t
        if not doubled_batch_cfg or guidance_scale == 0.0:
            steps.append(Step(t, dt, 0.0, False))
        elif t > 0.5:
            steps.append(Step(t, dt, guidance_scale, False))
        else:
            steps.append(Step(t, dt, 2.0 * guidance_scale, True))
    return steps


class Solver(Protocol):
    """Anything that solves like :meth:`zvperf.engine.models.ZipVoice.solve`: the model's own eager loop, or a
    backend's (compiled, captured, exported) version of it."""

    def __call__(
        self,
        x0: torch.Tensor,
        text_condition: torch.Tensor,
        speech_condition: torch.Tensor,
        padding_mask: torch.Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float = 0.5,
    ) -> torch.Tensor: ...


def nfe(steps: list[Step]) -> int:
    """Decoder evaluations per utterance, counting the doubled batch of a guided step twice."""
    return sum(2 if step.guidance else 1 for step in steps)


@dataclasses.dataclass
class SolverInputs:
    """Everything the ODE solve takes, prepared: the solver benchmark times the loop alone."""

    x0: torch.Tensor
    text_condition: torch.Tensor
    speech_condition: torch.Tensor
    padding_mask: torch.Tensor | None  # None: no utterance is padded
    text_ids: list[int]
    prompt_ids: list[int]
    prompt_frames: int
    own_length: bool  # laid out by the ratio rule at the text's own length (not stretched to a fixed length)

    @property
    def frames(self) -> int:
        return self.x0.shape[1]

    @property
    def generated_frames(self) -> int:
        return self.frames - self.prompt_frames

    @property
    def batch(self) -> int:
        return self.x0.shape[0]

    @property
    def audio_seconds(self) -> float:
        """Speech produced by one solve, all utterances of the batch together."""
        return self.batch * self.generated_frames / FRAMES_PER_SECOND

    def solver_args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.x0, self.text_condition, self.speech_condition, self.padding_mask
