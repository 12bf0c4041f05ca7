"""eSpeak NG per fragment: its library through ctypes against the ``espeak-ng`` program.

20 Spanish sentences, each about as long as the speech of a 6-second fragment, spoken both
ways, interleaved sentence by sentence so both see the same load:

- library: the ``espeak`` stage (``ESpeakSynthesizer.synthesize``: libespeak-ng through
  ctypes, the process-wide lock, PCM16 to float32);
- program: ``espeak-ng --stdout --stdin -v es -s 175`` run per fragment, the WAV it writes
  on stdout parsed and converted to float32 the same way.

Reported: milliseconds per fragment (median and mean), the real-time factor (seconds of
compute per second of speech), what starting the program costs on its own (``--version``,
and a one-word sentence both ways), and the program's aggregate throughput with several
fragments at once (the library serializes every call; the program could run in parallel).

    python benchmarks/bench_espeak.py [--repeat 5] [--parallel 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import common
import numpy as np

from stsdub import AudioBuffer, SynthesisRequest
from stsdub._builtin.espeak import DEFAULT_RATE, ESpeakSynthesizer
from stsdub._core._audio import pcm16_to_float

#: Sentences of 15-18 words: 4.5-6 s of speech at eSpeak's default rate.
SENTENCES_ES = (
    "Mañana por la mañana nos veremos en la estación y después tomaremos juntos el tren a la ciudad.",
    "La reunión se ha cambiado al viernes, así que por favor avisa a tu hermano y a sus amigos.",
    "Hace muy buen tiempo hoy, pero el pronóstico dice que esta noche va a llover en toda la región.",
    "Compró tres manzanas, una barra de pan y un litro de leche en la tienda de la esquina.",
    "Muchas gracias por tu ayuda, sin ti no habríamos terminado el proyecto antes de la fecha límite.",
    "El tren llegó tarde otra vez esta tarde y tuvimos que esperar casi una hora en el andén.",
    "Mi hermano vive en una casa pequeña cerca del río, a unos veinte minutos del centro del pueblo.",
    "Gira a la izquierda en la próxima esquina y sigue recto hasta llegar a la plaza mayor.",
    "Los niños están jugando en el jardín mientras sus padres preparan la cena en la cocina.",
    "Me gustaría tomar una taza de café con leche y un trozo de tarta de chocolate, por favor.",
    "El partido empieza a las siete en punto, así que tenemos que salir de casa antes de las seis.",
    "Abre la ventana, por favor, porque hace mucho calor aquí dentro y no se puede respirar bien.",
    "Según el informe publicado esta semana, la economía del país creció un tres por ciento el año pasado.",
    "La película que vimos anoche era demasiado larga, pero la música y los actores eran excelentes.",
    "Antes de viajar al extranjero, recuerda revisar tu pasaporte y reservar el hotel con tiempo.",
    "El museo abre todos los días de diez a seis, excepto los lunes y los días festivos nacionales.",
    "Nuestro equipo ha trabajado durante meses para mejorar la calidad del sonido de la aplicación.",
    "Si tienes alguna pregunta sobre el contrato, no dudes en llamarme por teléfono a cualquier hora.",
    "Los científicos descubrieron una nueva especie de rana en las montañas del norte del continente.",
    "Cuando era pequeño pasaba los veranos en la playa con mis abuelos, y todavía echo de menos aquello.",
)


def wav_pcm(data: bytes) -> tuple[bytes, int]:
    """The PCM16 samples and rate of the WAV espeak-ng streams to stdout.

    It writes the header before it knows the length, so the RIFF and data sizes are
    placeholders (0x7ffff000): the samples are everything after the data chunk's header.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"not a WAV stream: {data[:12]!r}")
    position, rate = 12, 0
    while position + 8 <= len(data):
        kind, size = (
            data[position : position + 4],
            int.from_bytes(data[position + 4 : position + 8], "little"),
        )
        body = position + 8
        if kind == b"fmt ":
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
        elif kind == b"data":
            return data[body:], rate
        position = body + size + (size & 1)
    raise ValueError("no data chunk in the WAV stream")


def program_synthesize(program: str, text: str, voice: str = "es", rate: int = DEFAULT_RATE) -> AudioBuffer:
    """One fragment through the ``espeak-ng`` program (the text on stdin, so it is never an option)."""
    done = subprocess.run(
        [program, "--stdout", "--stdin", "-b", "1", "-v", voice, "-s", str(rate)],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()}")
    pcm, sample_rate = wav_pcm(done.stdout)
    return AudioBuffer(pcm16_to_float(pcm), sample_rate)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="times each sentence is spoken each way")
    parser.add_argument(
        "--parallel", type=int, default=2, help="program calls at once for the throughput row"
    )
    args = parser.parse_args()
    program = shutil.which("espeak-ng")
    if program is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    version = subprocess.run(
        [program, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"# {common.machine()}; {version}")

    started = time.perf_counter()
    stage = ESpeakSynthesizer()
    load = time.perf_counter() - started
    warm = timed(stage.warmup)
    print(f"espeak stage: load {load * 1000:.0f} ms (voice listing + library), warm-up {warm * 1000:.0f} ms")
    requests = [SynthesisRequest(text=t, language="es") for t in SENTENCES_ES]
    # Both ways once, untimed: the dictionary in the page cache, and the same speech from each.
    for request in requests:
        a = stage.synthesize(request).duration
        b = program_synthesize(program, request.text).duration
        assert abs(a - b) < 0.05 * b, (request.text, a, b)

    library: list[float] = []
    process: list[float] = []
    speech = 0.0
    for _ in range(args.repeat):
        for request in requests:
            started = time.perf_counter()
            audio = stage.synthesize(request)
            library.append(time.perf_counter() - started)
            speech += audio.duration
            process.append(timed(lambda r=request: program_synthesize(program, r.text)))
    per_fragment = speech / len(library)
    lengths = [stage.synthesize(r).duration for r in requests]
    print(
        f"{len(requests)} sentences × {args.repeat}: {min(lengths):.1f}-{max(lengths):.1f} s of speech"
        f" each, {per_fragment:.2f} s on average"
    )
    print("| way | ms per fragment (median) | mean | RTF |")
    print("|---|---:|---:|---:|")
    for name, times in (("library (ctypes), the stage", library), ("program per fragment", process)):
        print(
            f"| {name} | {statistics.median(times) * 1000:.1f} | {statistics.mean(times) * 1000:.1f} |"
            f" {sum(times) / speech:.4f} |"
        )
    difference = (statistics.median(process) - statistics.median(library)) * 1000
    print(f"program - library: {difference:+.1f} ms per fragment (median)")

    spawn = statistics.median(
        timed(lambda: subprocess.run([program, "--version"], capture_output=True, check=True))
        for _ in range(20)
    )
    word = SynthesisRequest(text="Hola.", language="es")
    word_library = statistics.median(timed(lambda: stage.synthesize(word)) for _ in range(20))
    word_process = statistics.median(timed(lambda: program_synthesize(program, "Hola.")) for _ in range(20))
    print(f"| start espeak-ng (--version) | {spawn * 1000:.1f} | | |")
    print(f"| one word, library | {word_library * 1000:.1f} | | |")
    print(f"| one word, program | {word_process * 1000:.1f} | | |")

    texts = [r.text for r in requests] * args.repeat
    with ThreadPoolExecutor(args.parallel) as pool:
        started = time.perf_counter()
        audios = list(pool.map(lambda t: program_synthesize(program, t), texts))
        wall = time.perf_counter() - started
    total = sum(a.duration for a in audios)
    print(
        f"| program, {args.parallel} at once (aggregate) | {wall / len(texts) * 1000:.1f} per fragment |"
        f" | {wall / total:.4f} |"
    )
    kept = "library" if difference > 20 else "program (within 20 ms: the simpler way)"
    print(
        f"keep: {kept}; RMS of the last fragment {float(np.sqrt(np.mean(np.square(audios[-1].samples)))):.3f}"
    )
    stage.close()


if __name__ == "__main__":
    main()
