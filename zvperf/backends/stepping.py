"""A solver that runs the engine's solve plan through a backend's own step function.

Every backend shares the once-per-utterance work (the text/speech part of the input projection,
the conditioning and Euler coefficients of every step, all in :class:`SolvePlan`, in torch) and
differs only in how one :class:`DecoderStep` is executed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zvperf.engine.models import SolvePlan, ZipVoice

# step(x, constant, padding_mask or None, conditioning, coefficients) -> next x, as DecoderStep.forward.
StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor], torch.Tensor]


def graph_inputs(
    x: torch.Tensor,
    constant: torch.Tensor,
    mask: torch.Tensor | None,
    conditioning: torch.Tensor,
    coefficients: torch.Tensor,
) -> list[torch.Tensor]:
    """A step's inputs for an exported graph, which always takes a mask (all False when there is no padding)."""
    if mask is None:
        mask = torch.zeros(constant.shape[:2], dtype=torch.bool, device=constant.device)
    return [x, constant, mask, conditioning, coefficients]


def built_step_solver(model: ZipVoice, build: Callable[[bool], StepFunction]) -> StepSolver:
    """A :class:`StepSolver` whose step functions ``build(guided)`` makes once per kind, the kind the model
    normally needs made now: an export or an engine build is a one-time cost that must stay out of timed calls."""
    steps: dict[bool, StepFunction] = {}

    def step_for(guided: bool) -> StepFunction:
        if guided not in steps:
            steps[guided] = build(guided)
        return steps[guided]

    step_for(not model.guidance_is_input)
    return StepSolver(model, step_for)


class StepSolver:
    """Callable like :meth:`ZipVoice.solve`; ``step_for(guided)`` gives the step function for the plan's kind."""

    def __init__(self, model: ZipVoice, step_for: Callable[[bool], StepFunction]) -> None:
        self.model = model
        self.step_for = step_for

    def plan(
        self,
        text_condition: torch.Tensor,
        speech_condition: torch.Tensor,
        padding_mask: torch.Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float,
    ) -> SolvePlan:
        return SolvePlan(self.model, text_condition, speech_condition, padding_mask, num_step, guidance_scale, t_shift)

    def __call__(
        self,
        x0: torch.Tensor,
        text_condition: torch.Tensor,
        speech_condition: torch.Tensor,
        padding_mask: torch.Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float = 0.5,
    ) -> torch.Tensor:
        plan = self.plan(text_condition, speech_condition, padding_mask, num_step, guidance_scale, t_shift)
        return plan.run(self.step_for(plan.guided), x0)
