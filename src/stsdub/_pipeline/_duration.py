"""Fitting synthesized speech into the time of its source fragment.

For each fragment (docs/duration-matching.md tells the whole story):

1. Leading and trailing silence of the synthesized speech is trimmed.
   (Before that, the stream may have asked a translator that honours a length budget for a
   shorter text, when the speech would need more than ``comfortable_speed``.)
   Speech longer than its aim first borrows up to ``max_borrow`` seconds of the silence that
   follows the source's speech in the fragment (or the pause after the fragment, which a
   file host appends to it: ``tail``), and is only sped up for what is left.
2. A synthesizer that can change its speaking rate (``supports_speed = True``) is asked for
   the speed that fits, clamped to ``[min_speed, max_speed]`` (:meth:`DurationMatcher.speed_for`;
   the stream makes that call): once it has heard its voice speak, the stream predicts the
   speech's length from the voice's measured characters per second and asks for that speed
   in the first call; it asks once more only when the speech still misses by more than
   ``speed_tolerance``.
3. What is still off is time-stretched with rubberband, clamped to ``[min_stretch, max_stretch]``.
4. The speech is laid after whatever the previous fragment carried over, padded with silence
   to the fragment's exact length; speech that runs past the end is never cut, it is carried
   into the start of the next fragment. The carry is bounded by ``max_carry``: speech that
   would run further is stretched beyond ``max_stretch`` (up to ``max_forced_stretch``).
5. The status follows from the variance the clamps leave.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import attrs
import numpy as np

from .._core import _audio
from .._core._values import AudioBuffer, Status
from ..errors import ConfigurationError, ErrorCode, StageError, StageLoadError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = [
    "Carry",
    "DurationMatcher",
    "DurationPolicy",
    "Fitted",
    "find_rubberband",
    "time_stretch",
    "trim_silence",
]

# Below this level (-50 dBFS) a sample counts as silence when trimming the ends.
_SILENCE_LEVEL = 10 ** (-50 / 20)
# Frame and reach of the search for a quiet place to cut, when cutting cannot be avoided.
_CUT_FRAME_SECONDS = 0.010
_CUT_SEARCH_SECONDS = 0.3
# What rubberband and soxr may add or drop by rounding lengths.
_ROUNDING_SECONDS = 0.002
# A short fade where speech has to be cut, so the cut does not click.
_FADE_SECONDS = 0.005

RUBBERBAND_HINT = (
    "install it with `apt-get install rubberband-cli` (Debian, Ubuntu) or `brew install rubberband`"
    " (macOS), or pass stsdub.DurationPolicy(time_stretch=False) to only pad and carry"
)


def _check_ratio(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value < math.inf:
        raise ConfigurationError(f"DurationPolicy.{attr.name} must be >= 0, got {value!r}")


def _check_factor(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0 < value < math.inf:
        raise ConfigurationError(f"DurationPolicy.{attr.name} must be a positive factor, got {value!r}")


@attrs.frozen
class DurationPolicy:
    """How dubbed speech is made to fit the source fragment, and how strictly.

    Speeds and stretches are tempo factors: above 1 is faster (shorter), below 1 slower.

    Args:
        success_max: Largest relative difference still reported as SUCCESS (10 %).
        partial_max: Largest relative difference reported as PARTIAL (20 %).
        strict: Beyond ``partial_max``, FAILED with ``DURATION_MISMATCH_EXCEEDED`` instead of
            PARTIAL with a warning.
        min_speed: Slowest speaking rate asked of a synthesizer that supports speed.
        max_speed: Fastest speaking rate asked of a synthesizer that supports speed; what is
            left goes to rubberband. Past 1.2, eSpeak NG's own rate loses more words than a
            stretch of its natural speech does (docs/performance.md, whole sentences).
        speed_tolerance: Relative difference below which the synthesizer is not asked again.
        time_stretch: Time-stretch with rubberband. ``False`` only pads and carries; speech
            that runs past ``max_carry`` is then cut at its quietest point.
        min_stretch: Slowest rubberband tempo for the fit.
        max_stretch: Fastest rubberband tempo for the fit.
        stretch_tolerance: Relative difference below which the speech is not stretched.
        max_carry: Seconds of speech that may run past a fragment's end into the next one.
        max_forced_stretch: Fastest tempo used, beyond ``max_stretch``, to keep the carry
            within ``max_carry`` (a last resort; the status reports the mismatch).
        comfortable_speed: Tempo above which speech sounds rushed: when the first synthesis
            would need more, a translator that honours a length budget is asked once more
            for a shorter text before anything is sped up or stretched.
        max_borrow: Seconds that speech longer than the source's may take from the silence
            after the source's speech (within the fragment, or the pause a file host appends
            to it) before it is sped up; 0 turns borrowing off.
    """

    success_max: float = attrs.field(default=0.10, validator=_check_ratio)
    partial_max: float = attrs.field(default=0.20, validator=_check_ratio)
    strict: bool = False
    min_speed: float = attrs.field(default=0.8, validator=_check_factor)
    max_speed: float = attrs.field(default=1.2, validator=_check_factor)
    speed_tolerance: float = attrs.field(default=0.05, validator=_check_ratio)
    time_stretch: bool = True
    min_stretch: float = attrs.field(default=0.85, validator=_check_factor)
    max_stretch: float = attrs.field(default=1.3, validator=_check_factor)
    stretch_tolerance: float = attrs.field(default=0.02, validator=_check_ratio)
    max_carry: float = attrs.field(default=0.5, validator=_check_ratio)
    max_forced_stretch: float = attrs.field(default=3.0, validator=_check_factor)
    comfortable_speed: float = attrs.field(default=1.15, validator=_check_factor)
    max_borrow: float = attrs.field(default=0.5, validator=_check_ratio)

    def __attrs_post_init__(self) -> None:
        if self.partial_max < self.success_max:
            raise ConfigurationError("DurationPolicy.partial_max must be >= success_max")
        for low, high in (("min_speed", "max_speed"), ("min_stretch", "max_stretch")):
            if not getattr(self, low) <= 1 <= getattr(self, high):
                raise ConfigurationError(f"DurationPolicy needs {low} <= 1 <= {high}")
        if self.max_forced_stretch < self.max_stretch:
            raise ConfigurationError("DurationPolicy.max_forced_stretch must be >= max_stretch")
        if self.comfortable_speed < 1:
            raise ConfigurationError("DurationPolicy.comfortable_speed must be >= 1")

    def status_for(self, variance: float) -> Status:
        """SUCCESS up to ``success_max``, PARTIAL above (FAILED is decided by ``strict``)."""
        if variance <= self.success_max:
            return Status.SUCCESS
        return Status.PARTIAL


@attrs.frozen(repr=False)
class Carry:
    """Speech of one fragment that runs past its end, to be played at the next one's start."""

    samples: FloatArray = attrs.field(eq=attrs.cmp_using(eq=np.array_equal))
    sample_rate: int
    #: The fragment the speech belongs to.
    sequence_number: int

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate

    def at_rate(self, sample_rate: int) -> FloatArray:
        return _audio.resample(self.samples, self.sample_rate, sample_rate)

    def __repr__(self) -> str:
        return f"Carry({1000 * self.duration:.0f} ms from fragment {self.sequence_number})"


@attrs.frozen
class Fitted:
    """The outcome of fitting one fragment's speech."""

    audio: AudioBuffer
    #: Relative difference from the fragment's length that the speed and stretch clamps
    #: leave (the status follows from it).
    variance: float
    status: Status
    warnings: tuple[str, ...] = ()
    error: StageError | None = None
    #: Speech that runs into the next fragment, if any.
    carry: Carry | None = None
    #: Relative difference at the synthesizer's natural speed, before any change.
    natural_variance: float | None = None
    #: The rubberband tempo applied (1.0: not stretched).
    tempo: float = 1.0
    #: Samples of this fragment's speech in ``audio`` plus ``carry`` (after stretching).
    speech_samples: int = 0
    #: Seconds taken from the silence after the aim instead of speeding up.
    borrowed: float = 0.0
    #: Seconds from the fragment's start at which this fragment's speech starts.
    start: float = 0.0
    #: Seconds the speech aimed at (the source's speech, or the fragment's own time).
    aim: float = 0.0


def trim_silence(samples: FloatArray, level: float = _SILENCE_LEVEL) -> FloatArray:
    """The samples between the first and the last one louder than ``level``."""
    loud = np.flatnonzero(np.abs(samples) > level)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


@functools.lru_cache(maxsize=1)
def find_rubberband() -> tuple[str, tuple[int, ...]]:
    """The path of the ``rubberband`` program and its version.

    Raises:
        StageLoadError: It is not installed.
    """
    path = shutil.which("rubberband")
    if path is None:
        raise StageLoadError(
            f"duration matching needs the rubberband program, which is not on PATH: {RUBBERBAND_HINT}"
        )
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StageLoadError(
            f"the rubberband program at {path} does not run ({exc}): {RUBBERBAND_HINT}"
        ) from exc
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout + done.stderr)
    version = tuple(int(g) for g in found.groups() if g is not None) if found else ()
    return path, version


def time_stretch(samples: FloatArray, sample_rate: int, tempo: float) -> FloatArray:
    """Change the tempo of speech by ``tempo`` (> 1 faster) without changing its pitch.

    Runs the rubberband program through pyrubberband; with rubberband 3 the finer R3 engine,
    which keeps voices cleaner than the older R2 engine.
    """
    if tempo == 1.0 or samples.size == 0:
        return samples
    import pyrubberband

    _path, version = find_rubberband()
    args: dict[str, str] = {"--fine": ""} if version and version[0] >= 3 else {}
    try:
        out = pyrubberband.time_stretch(samples, sample_rate, tempo, rbargs=args)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        raise StageError(ErrorCode.INTERNAL_ERROR, f"rubberband failed: {exc}", "duration") from exc
    return np.clip(np.asarray(out, dtype=np.float32), -1.0, 1.0).astype(np.float32)  # type: ignore[no-any-return]


def _cut_quietly(samples: FloatArray, limit: int, sample_rate: int) -> FloatArray:
    """At most ``limit`` samples, ending in the last near-silent 10 ms before ``limit``.

    Syllables come about four a second, so the last 0.3 s nearly always hold a gap between
    them; the latest frame about as quiet as the quietest one is where a word ends.
    """
    frame = max(1, round(_CUT_FRAME_SECONDS * sample_rate))
    start = max(0, limit - round(_CUT_SEARCH_SECONDS * sample_rate))
    ends = np.arange(start + frame, limit + 1, frame)
    if ends.size:
        energy = np.array([np.sum(np.square(samples[e - frame : e], dtype=np.float64)) for e in ends])
        quiet = np.flatnonzero(energy <= 2 * energy.min() + 1e-9 * frame)
        end = int(ends[quiet[-1]])
    else:
        end = limit
    out: FloatArray = samples[:end].copy()
    fade = min(out.size, round(_FADE_SECONDS * sample_rate))
    if fade:
        out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


#: Up to this many samples, fitting speech that needs no stretch costs less than a thread hop.
_INLINE_SAMPLES = 16_384


class DurationMatcher:
    """Makes dubbed speech exactly as long as its fragment and says how well it fit.

    One matcher serves every stream; the speech carried from fragment to fragment is the
    stream's, handed in and out of :meth:`fit`.

    Raises:
        StageLoadError: Time-stretching is on and the rubberband program is missing.
    """

    def __init__(self, policy: DurationPolicy | None = None) -> None:
        self.policy = policy or DurationPolicy()
        if self.policy.time_stretch:
            find_rubberband()

    def room_for(
        self, natural: float, target_seconds: float, carry: Carry | None = None, spare: float = 0.0
    ) -> float:
        """Seconds ``natural`` seconds of speech may last: the aim, plus what may be borrowed.

        Args:
            natural: Seconds of speech (silence trimmed).
            target_seconds: The aim (the source's speech, or the fragment's own time).
            carry: Speech the previous fragment carries into this one (when the aim is the
                whole fragment).
            spare: Seconds of silence after the aim that speech may borrow from.
        """
        room = target_seconds - (carry.duration if carry is not None else 0.0)
        if natural > room > 0:
            room += min(natural - room, max(spare, 0.0), self.policy.max_borrow)
        return room

    def speed_for(
        self,
        speech: AudioBuffer | float,
        target_seconds: float,
        carry: Carry | None = None,
        spare: float = 0.0,
        *,
        current: float = 1.0,
    ) -> float | None:
        """The speaking rate to ask the synthesizer for, or ``None`` when ``speech`` will do.

        Args:
            speech: What the synthesizer said at the speed ``current``, or how many seconds
                of speech that is (predicted, before anything is synthesized).
            target_seconds: The aim: the source's speech, or the fragment's own time.
            carry: Speech the previous fragment carries into this one.
            spare: Seconds of silence after the aim that the speech may borrow first.
            current: The speaking rate ``speech`` was said at.
        """
        if isinstance(speech, AudioBuffer):
            seconds = trim_silence(speech.samples).size / speech.sample_rate
        else:
            seconds = float(speech)
        room = self.room_for(seconds, target_seconds, carry, spare)
        if seconds <= 0 or room <= 0:
            return None if seconds <= 0 else self.policy.max_speed
        wanted = seconds / room
        if abs(wanted - 1.0) <= self.policy.speed_tolerance:
            return None
        speed = min(max(current * wanted, self.policy.min_speed), self.policy.max_speed)
        return None if math.isclose(speed, current) else speed

    def runs_inline(
        self,
        speech: AudioBuffer,
        target_samples: int,
        sample_rate: int,
        carry: Carry | None = None,
        *,
        aim_samples: int | None = None,
        offset: int = 0,
        tail: int = 0,
    ) -> bool:
        """Whether :meth:`fit` is cheap enough to run on the event loop.

        True for short speech that needs no time-stretch: then fitting is a few array
        operations, cheaper than the hop to a worker thread that a real fit is worth.
        """
        if speech.samples.size > _INLINE_SAMPLES:
            return False
        if not self.policy.time_stretch:
            return True
        natural = trim_silence(speech.samples).size * sample_rate / speech.sample_rate
        carried = carry.at_rate(sample_rate).size if carry is not None else 0
        _start, aim, borrowed = self._plan(
            natural, max(target_samples, 1), carried, offset, aim_samples, tail, sample_rate
        )
        goal = aim + borrowed
        return goal > 0 and natural > 0 and abs(natural / goal - 1.0) <= self.policy.stretch_tolerance

    def _plan(
        self,
        natural: float,
        target: int,
        carried: int,
        offset: int,
        aim_samples: int | None,
        tail: int,
        sample_rate: int,
    ) -> tuple[int, int, int]:
        """Where the speech starts, its aim, and what it borrows after the aim (samples)."""
        # This fragment's speech starts after the carried speech and not before the source's did.
        start = carried + max(offset - carried, 0)
        room = target - start
        tail = min(max(tail, 0), max(room - 1, 0))
        if aim_samples is None and tail == 0:
            aim = room
        elif aim_samples is None:
            aim = max(room - tail, 1)
        else:
            aim = max(min(aim_samples, room - tail), 1)
        borrowed = 0
        if aim > 0 and natural > aim:
            # Silence after the aim would stay silent: take some of it before speeding up.
            cap = min(max(room - aim, 0), round(self.policy.max_borrow * sample_rate))
            borrowed = min(math.ceil(natural - aim), cap)
        return start, aim, borrowed

    def spill(
        self, carry: Carry, target_samples: int, sample_rate: int, sequence_number: int
    ) -> tuple[AudioBuffer, Carry | None]:
        """Audio for fragment ``sequence_number``, which has no speech of its own.

        The carried speech, then silence; what of it does not fit is carried on.
        """
        samples = carry.at_rate(sample_rate)
        rest = samples[target_samples:]
        out = AudioBuffer(_audio.fit_length(samples, target_samples), sample_rate)
        return out, (Carry(rest.copy(), sample_rate, sequence_number) if rest.size else None)

    def fit(
        self,
        speech: AudioBuffer,
        target_samples: int,
        sample_rate: int,
        *,
        carry: Carry | None = None,
        speed: float = 1.0,
        sequence_number: int = 0,
        aim_samples: int | None = None,
        offset: int = 0,
        tail: int = 0,
    ) -> Fitted:
        """Fit ``speech`` into ``target_samples`` samples at ``sample_rate``.

        Args:
            speech: The synthesized speech, at any rate.
            target_samples: The fragment's length, at ``sample_rate``.
            sample_rate: The rate of the output.
            carry: Speech the previous fragment of the stream runs into this one; it is
                played first.
            speed: The speaking rate the synthesizer was asked for (reported only).
            sequence_number: The fragment's, recorded in the carry it leaves.
            aim_samples: How long the speech should last, at ``sample_rate``: the source's
                speech, when the ASR said where it was. ``None``: all the room there is.
            offset: Where the source's speech started in the fragment; the dubbed speech
                starts there too (or after the carried speech, if that runs longer).
            tail: Samples at the end of the fragment that belong to the pause after it (a
                file host appends them): speech aims at the time before them and may only
                borrow from them (up to ``max_borrow``).
        """
        policy = self.policy
        target = max(target_samples, 1)
        trimmed = trim_silence(speech.samples)
        carried = carry.at_rate(sample_rate) if carry is not None else np.zeros(0, np.float32)
        warnings: list[str] = []
        if carry is not None and carried.size:
            warnings.append(
                f"speech starts {1000 * carried.size / sample_rate:.0f} ms late: fragment"
                f" {carry.sequence_number} ran over its end"
            )
        if trimmed.size == 0:
            silent = StageError(ErrorCode.SYNTHESIS_FAILED, "the synthesizer returned silence", "duration")
            silence = AudioBuffer(np.zeros(target_samples, np.float32), sample_rate)
            return Fitted(silence, 1.0, Status.FAILED, tuple(warnings), silent)

        c = carried.size
        natural = trimmed.size * sample_rate / speech.sample_rate  # speech length at the output rate
        start, aim, borrowed = self._plan(natural, target, c, offset, aim_samples, tail, sample_rate)
        lead = start - c
        room = target - start
        whole = aim_samples is None and tail <= 0  # the aim is the whole fragment
        # Borrowed time is chosen, not a mismatch: the speech aims at the aim plus it.
        goal = aim + borrowed
        if whole:
            natural_variance = abs(c + natural * speed - target) / target
        else:
            natural_variance = abs(natural * speed - aim) / aim
        wanted = natural / goal if goal > 0 else math.inf
        tempo = 1.0
        if policy.time_stretch:
            tempo = min(max(wanted, policy.min_stretch), policy.max_stretch)
            if abs(tempo - 1.0) <= policy.stretch_tolerance:
                tempo = 1.0
        spoken = natural / tempo
        variance = abs(c + spoken - target) / target if whole else abs(spoken - goal) / goal
        # What the speech really takes of the silence after the aim, once stretched.
        used = min(max(natural / tempo - aim, 0.0), borrowed) if borrowed else 0.0

        # Keep the drift bounded: this fragment's speech may end at most max_carry late.
        limit = target + round(policy.max_carry * sample_rate) - start
        cut = False
        if natural / tempo > limit:
            needed = natural / max(limit, 1)
            if policy.time_stretch and needed > tempo:
                forced = min(needed, policy.max_forced_stretch)
                warnings.append(
                    f"speech sped up ×{forced:.2f}, beyond max_stretch ×{policy.max_stretch:g},"
                    f" to keep the drift within max_carry ({policy.max_carry:g} s)"
                )
                tempo = forced
            cut = natural / tempo > limit

        stretched = time_stretch(trimmed, speech.sample_rate, tempo)
        placed = _audio.resample(stretched, speech.sample_rate, sample_rate)
        # Rubberband and resampling round lengths: a stretch to fit the room exactly may end a
        # few samples late, which is no reason to carry anything.
        if tempo == wanted and 0 < placed.size - goal <= round(_ROUNDING_SECONDS * sample_rate):
            placed = placed[:goal]
        if placed.size > limit:
            placed = trim_silence(placed) if not cut else placed
        if placed.size > limit:
            if cut:
                dropped = placed.size
                placed = _cut_quietly(placed, limit, sample_rate)
                warnings.append(
                    f"{1000 * (dropped - placed.size) / sample_rate:.0f} ms of speech did not fit"
                    " within max_carry and were cut at the quietest point"
                )
            else:  # rounding: a few samples at most
                placed = placed[:limit]
        content = np.concatenate([carried, np.zeros(lead, np.float32), placed]) if start else placed
        rest = content[target_samples:]
        out = AudioBuffer(_audio.fit_length(content, target_samples), sample_rate)
        carry_out = Carry(rest.copy(), sample_rate, sequence_number) if rest.size else None
        if carry_out is not None:
            warnings.append(
                f"speech runs {1000 * rest.size / sample_rate:.0f} ms past the fragment's end;"
                " carried into the next fragment"
            )

        status = policy.status_for(variance)
        error: StageError | None = None
        if variance > policy.partial_max:
            message = (
                f"speech lasts {natural / sample_rate:.2f} s for {room / sample_rate:.2f} s of room"
                f" and cannot be fitted within the speed limits ({variance:.0%} off, limit"
                f" {policy.partial_max:.0%})"
            )
            if policy.strict:
                status = Status.FAILED
                error = StageError(ErrorCode.DURATION_MISMATCH_EXCEEDED, message, "duration")
            else:
                warnings.append(message)
        elif status is Status.PARTIAL:
            warnings.append(f"speech length is {variance:.0%} off the fragment's after clamped speed changes")
        return Fitted(
            out,
            variance,
            status,
            tuple(warnings),
            error,
            carry=carry_out if error is None else None,
            natural_variance=natural_variance,
            tempo=tempo,
            speech_samples=placed.size,
            borrowed=used / sample_rate,
            start=start / sample_rate,
            aim=max(aim, 0) / sample_rate,
        )
