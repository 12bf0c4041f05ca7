"""XTTS synthesizer: what the latents cache saves, and what the plugin adds over Coqui.

Runs on CUDA when available, else on the CPU. With ``--model-dir`` it measures a real XTTS
v2 directory; without, it builds the tiny random-weight model of the test suite (which says
nothing about speech quality or real-model speed, but does measure the plugin's own costs).

    python benchmarks/bench_xtts.py [--model-dir DIR] [--repeats 10] [--tokens 24]

Compared side by side, interleaved, medians of ``--repeats`` runs:

* ``clone``: computing a voice's conditioning latents from a reference clip, which every
  fragment would pay without the cache;
* ``synthesize``: one fragment with cached latents, through ``XTTSSynthesizer.synthesize``;
* ``inference``: the same generation called on Coqui's ``Xtts.inference`` directly, so
  ``synthesize - inference`` is the plugin's overhead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEXT = "Hello, and welcome to the game."
REFERENCE = "The weather is nice today. Please open the window. Thank you very much for your help."


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="a real XTTS model directory (default: tiny model)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=24, help="max_audio_tokens (tiny model runs to it)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--half", action="store_true", help="float16 autocast (CUDA only)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from tests.speech import speak

    from stsdub import AudioBuffer, SynthesisRequest
    from stsdub._builtin.xtts import XTTSSynthesizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from tests.stages.tiny_xtts import build_tiny_xtts

            model_dir = build_tiny_xtts(Path(tmp) / "tiny-xtts")
        samples, rate = speak(REFERENCE)
        reference = AudioBuffer(np.array(samples), rate)

        started = time.perf_counter()
        options: dict[str, object] = {"max_audio_tokens": args.tokens} if args.model_dir is None else {}
        stage = XTTSSynthesizer(
            device=device, model_dir=model_dir, half=args.half, **_voice(tmp, reference), **options
        )
        load_s = time.perf_counter() - started
        stage.warmup()
        request = SynthesisRequest(text=TEXT, language="en")
        latent, embedding = stage._conditioning(stage.default_voice)

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        timings: dict[str, list[float]] = {"clone": [], "synthesize": [], "inference": []}
        audio_s: list[float] = []
        for i in range(args.repeats):
            stage.add_voice(f"clone-{i}", [reference], language="en")
            sync()
            t = time.perf_counter()
            stage._conditioning(f"clone-{i}")
            sync()
            timings["clone"].append(time.perf_counter() - t)

            t = time.perf_counter()
            out = stage.synthesize(request)
            sync()
            timings["synthesize"].append(time.perf_counter() - t)
            audio_s.append(out.duration)

            t = time.perf_counter()
            with torch.inference_mode():
                stage.model.inference(TEXT, "en", latent, embedding, **stage._inference_options)
            sync()
            timings["inference"].append(time.perf_counter() - t)

    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    audio = statistics.median(audio_s)
    name = "tiny random-weight XTTS" if args.model_dir is None else str(args.model_dir)
    threads = torch.get_num_threads()
    print(f"model: {name}; device: {device}; torch threads: {threads}; repeats: {args.repeats}")
    print(f"load (construction):            {load_s * 1000:8.0f} ms")
    print(f"clone latents ({reference.duration:.1f} s clip):    {med['clone']:8.1f} ms  (once per voice)")
    print(f"synthesize, cached latents:     {med['synthesize']:8.1f} ms  for {audio:.2f} s of audio")
    print(f"Xtts.inference directly:        {med['inference']:8.1f} ms")
    overhead = med["synthesize"] - med["inference"]
    print(f"plugin overhead:                {overhead:8.1f} ms  ({overhead / med['inference'] * 100:+.1f} %)")
    uncached = (med["synthesize"] + med["clone"]) / med["synthesize"]
    print(f"a fragment without the cache:   {uncached:8.2f} x the cached cost")
    print(f"real-time factor (synthesize):  {med['synthesize'] / 1000 / audio:8.3f}")


def _voice(tmp: str, reference: object) -> dict[str, object]:
    """One profile cloned from the reference (written to a WAV file, as users give it)."""
    import soundfile

    from stsdub import AudioBuffer

    assert isinstance(reference, AudioBuffer)
    path = Path(tmp) / "reference.wav"
    soundfile.write(path, reference.samples, reference.sample_rate)
    return {"voices": {"bench": {"reference_audio": [str(path)], "language": "en"}}}


if __name__ == "__main__":
    main()
