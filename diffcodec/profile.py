"""What a file's version and flags mean for its stream: one profile, resolved once from the header.

Everything that differs between format versions (and flag bits) is a property here, so the codec and the
CLI ask the profile instead of comparing versions: how the chain's steps are coded, which model identity the
file names, how numbers are computed (:mod:`diffcodec.numerics`), which exact stages exist, whether the
table has partial points, and how many symbols the exact stage codes.

>>> p = StreamProfile(version=5, flags=FLAG_PARTIAL_POINTS | FLAG_COARSE_TO_FINE)
>>> p.has_method_bit, p.partial_points, p.exact_kind(1).name, p.numerics.exact
(True, True, 'COARSE', True)
>>> StreamProfile(version=3).exact_kind(None).name
'LINEAR'
"""

from __future__ import annotations

from dataclasses import dataclass

from .entropy import StepSizeCoder, StepSizeCoderV1
from .step_code import AdaptiveStepCode, StaticStepCode
from .format import (FLAG_COARSE_TO_FINE, FLAG_PARTIAL_POINTS, LEARNED, VERSION, ExactKind, first_point_implied,
                     known_flags, model_id_bytes, payload_check)
from .numerics import EXACT, FLOAT, Numerics

CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


@dataclass(frozen=True)
class StreamProfile:
    """A format version and its flag bits, and what they mean for the stream (docs/format.md, "Versions")."""

    version: int = VERSION
    flags: int = 0

    @classmethod
    def of(cls, header) -> "StreamProfile":
        """The profile of a :class:`~diffcodec.container.StreamHeader`."""
        return cls(header.version, header.flags)

    @classmethod
    def for_writing(cls, partial_points: bool, coarse_to_fine: bool) -> "StreamProfile":
        """The version this diffcodec writes, with the flags the file needs."""
        return cls(VERSION, (FLAG_PARTIAL_POINTS if partial_points else 0) | (FLAG_COARSE_TO_FINE if coarse_to_fine else 0))

    # ---- the header and the table

    @property
    def model_id_bytes(self) -> int:
        return model_id_bytes(self.version)

    @property
    def threads_stored(self) -> bool:
        """The header has the encoder's thread count (versions 1–5; version 6 has none: any decodes the same)."""
        return self.version < 6

    @property
    def known_flags(self) -> int:
        return known_flags(self.version)

    @property
    def partial_points(self) -> bool:
        """The table may hold points inside the exact stage (their rows carry a symbol count)."""
        return bool(self.flags & FLAG_PARTIAL_POINTS & self.known_flags)

    @property
    def coarse_to_fine(self) -> bool:
        """The learned exact stage is the coarse-to-fine one (bins, then values inside them)."""
        return bool(self.flags & FLAG_COARSE_TO_FINE & self.known_flags)

    def model_identity(self, model) -> bytes:
        """The model id a file of this profile names ``model`` by (``model`` as :attr:`numerics` runs it).

        Versions 1–3 name the U-Net (``identity``), 4 on the U-Net and context network (``codec_identity``),
        a coarse-to-fine file the coarse network too (``coarse_identity``; zeros when ``model`` has none).
        """
        if self.version < 4:
            identity = model.identity
        elif not self.coarse_to_fine:
            identity = model.codec_identity
        elif model.coarse is None:
            identity = bytes(self.model_id_bytes)  # the file names a coarse-to-fine network the model lacks
        else:
            identity = model.coarse_identity
        return identity[: self.model_id_bytes]

    # ---- the chain

    @property
    def shared_x_T(self) -> bool:
        """x_T is the shared randomness's first candidate, coded in no bits (version 6; ``stream.SHARED_X_T``)."""
        return self.version >= 6

    @property
    def first_point_implied(self) -> bool:
        """The first truncation point, x_S at no words, has no table row and no check (version 7;
        :func:`diffcodec.format.first_point_implied`)."""
        return first_point_implied(self.version)

    @property
    def point_checks(self) -> bool:
        """Each truncation point carries the codec's check of the payload prefix and the state there (versions
        1–7); version 8 checks the payload once in the container instead (:func:`diffcodec.format.payload_check`)."""
        return not payload_check(self.version)

    @property
    def numerics(self) -> Numerics:
        """How the numbers the stream depends on are computed: float (versions 1–4) or exactly (5 on)."""
        return EXACT if self.version >= 5 else FLOAT

    @property
    def threads_must_match(self) -> bool:
        """Versions 1–4 decode only on the encoder's thread count (their float networks' sums depend on it)."""
        return not self.numerics.exact

    @property
    def static_steps(self) -> bool:
        """The steps' symbols are coded with static integer tables (version 7; :class:`~diffcodec.step_code.StaticStepCode`)."""
        return self.version >= 7

    def step_sizes(self, chunk_bits: int) -> StepSizeCoder | StepSizeCoderV1:
        """A fresh adaptive coder of the steps' levels (versions 1–6): version 1's direct levels, or the change from
        the previous one.  Version 7 codes levels in its step code (:meth:`step_code`)."""
        return StepSizeCoderV1(chunk_bits) if self.version == 1 else StepSizeCoder(chunk_bits)

    def step_code(self, chunk_bits: int, timeline, dims: int) -> AdaptiveStepCode | StaticStepCode:
        """A fresh code of the chain's steps (level and chunk indices) for a stream of ``dims`` real dimensions on
        ``timeline``'s chain: the adaptive models of versions 1–6, or version 7's static tables (with the position
        tables where the chain and size are the fitted ones)."""
        if self.static_steps:
            return StaticStepCode.for_chain(chunk_bits, timeline, dims)
        return AdaptiveStepCode(self.step_sizes(chunk_bits), chunk_bits)

    # ---- the exact stage

    @property
    def has_method_bit(self) -> bool:
        """The exact stage starts with a method bit (versions 4 and 5)."""
        return self.version >= 4

    def exact_kind(self, method: int | None) -> ExactKind:
        """The exact stage a file of this profile codes, given its method bit (None where it has none)."""
        if self.version < 3:
            return ExactKind.INDEPENDENT
        if not self.has_method_bit or method != LEARNED:
            return ExactKind.LINEAR
        return ExactKind.COARSE if self.coarse_to_fine else ExactKind.LEARNED

    def exact_symbols(self, header, kind: ExactKind | None = None) -> int:
        """Symbols the exact stage of ``kind`` codes for ``header``'s image (a partial point's count is a prefix of
        them): a subpixel each, and in the coarse-to-fine stage a bin more for each colour subpixel.

        Without ``kind`` (from the header alone), a coarse-to-fine file's is the coarse-to-fine stage: the one
        diffcodec writes with that flag.
        """
        coarse = self.coarse_to_fine if kind is None else kind == ExactKind.COARSE
        return header.width * header.height * (CHANNELS[header.mode] + (3 if coarse else 0))

    def partial_share(self, header, subpixels: int, kind: ExactKind | None = None) -> float:
        """The share of the exact stage decoded at a partial point of ``subpixels`` symbols (0..1): what
        ``encode``, ``decode``, ``info`` and ``truncate`` report as "t = 0 (k%)"."""
        return subpixels / self.exact_symbols(header, kind)
