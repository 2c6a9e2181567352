"""Where a state lies in time: the four ways the codec counts it, and every conversion between them.

A stream codes the states of a respaced chain of S steps over the model's T training steps:

* **step** s = 0 … S − 1: the stream's order.  Step 0 codes x_T; step s the s-th state after it.
* **index** i = S − 1 − s: the state's index into the respaced schedule (``GaussianDiffusion.respace``'s
  arrays: ᾱ_i, the network's timestep ``timesteps[i]``).  The state after step s is x at index S − 1 − s.
* **position** p = S − s = i + 1: the header's chain position (``TruncationPoint.t``, ``exact_from``).  S is
  x_T, 1 is x_1; **0 is the exact image**, which no step produces.
* **paper t** = ``timesteps[i] + 1``: the DDPM timestep of Ho et al. 2020 (1 … T; 0 for the exact image),
  what the CLI shows and ``--stop-at-t`` takes.

The exact stage follows the chain's last coded step, ``last_step`` = S − exact_from; the stream's stages
after the chain count as step ``last_step + 1`` (:attr:`Timeline.exact_step`).

>>> tl = Timeline(schedule_steps=1000, num_steps=3, spacing="uniform", exact_from=2)
>>> [tl.paper_t(p) for p in (3, 2, 1, 0)]
[1000, 501, 1, 0]
>>> tl.position_of_step(0), tl.index_of_step(0), tl.last_step, tl.exact_step
(3, 2, 1, 2)
>>> tl.position_at_or_above(500), tl.step_at_or_above(500)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .diffusion import spaced_timesteps


@dataclass(frozen=True)
class Timeline:
    """The chain of one stream: T, S and their spacing, and (from a header) where the exact stage starts."""

    schedule_steps: int  # T of the model's training chain
    num_steps: int  # S, the states of the respaced chain
    spacing: str = "uniform"
    exact_from: int = 1  # the position of the last lossy state the stream codes (1: x_1)

    @classmethod
    def of(cls, header) -> "Timeline":
        """The timeline of a :class:`~diffcodec.container.StreamHeader`."""
        return cls(header.schedule_steps, header.num_steps, header.spacing, header.exact_from)

    @cached_property
    def kept(self) -> tuple[int, ...]:
        """The training indices the chain keeps, in increasing order (``spaced_timesteps``)."""
        return tuple(spaced_timesteps(self.schedule_steps, self.num_steps, self.spacing))

    # ---- step ↔ index ↔ position ↔ paper t

    def index_of_step(self, step: int) -> int:
        """The schedule index of the state step ``step`` produces."""
        return self.num_steps - 1 - step

    def position_of_step(self, step: int) -> int:
        """The header's chain position of the state step ``step`` produces (0 past the chain: the exact image)."""
        return 0 if step > self.last_step else self.num_steps - step

    def step_of_position(self, position: int) -> int:
        """The step that produces the state at ``position`` (0: the exact stage, :attr:`exact_step`)."""
        return self.exact_step if position == 0 else self.num_steps - position

    def paper_t(self, position: int) -> int:
        """The paper's t (0..T) of the state at chain position ``position`` (0..S)."""
        return 0 if position == 0 else self.kept[position - 1] + 1

    def paper_t_of_index(self, index: int) -> int:
        """The paper's t (1..T) of the state at schedule index ``index``."""
        return self.kept[index] + 1

    def paper_t_of_step(self, step: int) -> int:
        """The paper's t of the state step ``step`` produces (0 for the exact stage)."""
        return self.paper_t(self.position_of_step(step))

    def position_at_or_above(self, t: int) -> int:
        """The smallest chain position whose paper t is at least ``t`` (S if none; 0 for t ≤ 0): where
        ``--stop-at-t t`` stops."""
        if t <= 0:
            return 0
        return next((i + 1 for i, k in enumerate(self.kept) if k + 1 >= t), len(self.kept))

    def step_at_or_above(self, t: int) -> int:
        """The last step whose state has paper t ≥ ``t``, within the chain a stream codes (0 if none: x_T);
        ``t`` ≤ 0 is the exact stage."""
        if t <= 0:
            return self.exact_step
        return min(self.num_steps - self.position_at_or_above(t), self.last_step)

    # ---- where the chain stops

    @property
    def last_step(self) -> int:
        """The chain's last coded step (its state is at ``exact_from``); the exact stage follows it."""
        return self.num_steps - self.exact_from

    @property
    def exact_step(self) -> int:
        """The exact stage's place in the stream's step count: right after :attr:`last_step`."""
        return self.last_step + 1

    def stopping_at(self, step: int) -> "Timeline":
        """This chain with the exact stage after step ``step``."""
        return Timeline(self.schedule_steps, self.num_steps, self.spacing, self.num_steps - step)
