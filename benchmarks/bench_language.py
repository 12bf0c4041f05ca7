"""Which language is spoken: language ID, word error rate and speed of Whisper tiny.en vs base.

Three workloads, each through the registered ``faster-whisper`` stage with its defaults (int8,
beam 5, VAD, word timestamps), one call after another as one stream's file dub makes them:

* **language ID on generated speech**: eSpeak NG sentences in several languages, source
  language left to detection. Base detects; tiny.en cannot, and is scored on whether it
  refuses (``UNSUPPORTED_LANGUAGE``) speech that is not English rather than inventing English;
* **real English**: the ten 30-s AMI meeting excerpts (``common.REAL_DATA / "ami"``), each
  transcribed as ``stsdub dub`` does it (cut at pauses, each piece prompted with the one
  before, language detected per piece; stopped after the transcripts): the languages heard,
  and the word error rate (jiwer) of each model against the reference transcripts in
  ``benchmarks/data/ami_transcripts.json`` (how they were made: its ``note``);
* **speed**: real-time factor (processing time / audio duration) of both models on the AMI
  excerpts, with the stage's default threads (1 per call on 2 cores) and with ``--threads``.

    python benchmarks/bench_language.py --json out/bench_language.json
    python benchmarks/bench_language.py --hypotheses out/ami_hypotheses.json   # drafts for references
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

from stsdub import ASRRequest, AudioBuffer, StageError
from stsdub._builtin.faster_whisper import FasterWhisperASR

REFERENCES = Path(__file__).with_name("data") / "ami_transcripts.json"

#: Sentences per eSpeak NG voice; the language Whisper should hear is the key's first part.
GENERATED: dict[str, list[str]] = {
    "en-us": [
        "Good morning everyone. Today we will talk about the weather and our plans for the weekend.",
        "The meeting starts at nine, and the report must be ready before lunch.",
        "Please close the window, it is getting cold in here.",
    ],
    "de": [
        "Guten Morgen. Heute sprechen wir über das Wetter in Berlin und die Pläne für das Wochenende.",
        "Die Besprechung beginnt um neun Uhr, und der Bericht muss vor dem Mittagessen fertig sein.",
        "Bitte schließen Sie das Fenster, es wird hier drinnen kalt.",
    ],
    "fr": [
        "Bonjour à tous. Aujourd'hui nous allons parler de la météo et de nos projets pour le week-end.",
        "La réunion commence à neuf heures, et le rapport doit être prêt avant le déjeuner.",
        "Fermez la fenêtre, s'il vous plaît, il commence à faire froid ici.",
    ],
    "es": [
        "Buenos días a todos. Hoy vamos a hablar del tiempo y de nuestros planes para el fin de semana.",
        "La reunión empieza a las nueve, y el informe debe estar listo antes del almuerzo.",
        "Por favor, cierre la ventana, empieza a hacer frío aquí dentro.",
    ],
    "it": [
        "Buongiorno a tutti. Oggi parliamo del tempo e dei nostri programmi per il fine settimana.",
        "La riunione comincia alle nove, e il rapporto deve essere pronto prima di pranzo.",
        "Per favore, chiudete la finestra, qui dentro comincia a fare freddo.",
    ],
    "pt": [
        "Bom dia a todos. Hoje vamos falar sobre o tempo e os nossos planos para o fim de semana.",
        "A reunião começa às nove, e o relatório tem de estar pronto antes do almoço.",
        "Por favor, feche a janela, está a ficar frio aqui dentro.",
    ],
    "nl": [
        "Goedemorgen allemaal. Vandaag praten we over het weer en onze plannen voor het weekend.",
        "De vergadering begint om negen uur, en het verslag moet voor de lunch klaar zijn.",
        "Doe alstublieft het raam dicht, het wordt hier binnen koud.",
    ],
}

_WORD = re.compile(r"[a-z0-9']+")


def normalize(text: str) -> str:
    """Lower case, words only (hyphens split, ``%`` spelled), for scoring."""
    text = text.lower().replace("%", " percent").replace("-", " ")
    return " ".join(_WORD.findall(text))


def load(model: str, threads: int | None) -> FasterWhisperASR:
    options: dict[str, Any] = {"model": model}
    if threads is not None:
        options.update(cpu_threads=threads, num_workers=1)
    asr = FasterWhisperASR(device="cpu", **options)
    asr.warmup()
    return asr


def transcribe(asr: FasterWhisperASR, audio: np.ndarray, language: str | None) -> tuple[Any, float]:
    request = ASRRequest(audio=AudioBuffer(np.clip(audio, -1, 1), common.RATE), language=language)
    start = time.perf_counter()
    try:
        result: Any = asr.transcribe(request)
    except StageError as exc:
        result = exc
    return result, time.perf_counter() - start


def generated_lid(asr: FasterWhisperASR) -> dict[str, Any]:
    rows = []
    for voice, texts in GENERATED.items():
        expected = voice.split("-")[0]
        for text in texts:
            heard, _ = transcribe(asr, common.espeak(text, voice), None)
            if isinstance(heard, StageError):
                rows.append({"voice": voice, "refused": heard.code.value, "message": heard.message})
            else:
                rows.append(
                    {
                        "voice": voice,
                        "language": heard.language,
                        "probability": heard.language_probability,
                        "text": heard.text,
                    }
                )
            rows[-1]["expected"] = expected
    return {"rows": rows}


def ami(model: str, references: dict[str, str], threads: int | None) -> dict[str, Any]:
    """Each AMI excerpt transcribed as ``stsdub dub`` does (cut at pauses, each piece prompted
    with the one before, language left to detection), stopping after the transcripts."""
    import tempfile

    import jiwer

    from stsdub import Dubber

    options: dict[str, Any] = {"model": model}
    if threads is not None:
        options.update(cpu_threads=threads, num_workers=1)
    rows, busy, total = [], 0.0, 0.0
    dubber = Dubber(
        "faster-whisper",
        None,
        "espeak",
        source_language=None,
        target_language="en",
        device="cpu",
        asr_options=options,
        fragment_timeout=120,
    )
    with dubber, tempfile.TemporaryDirectory() as tmp:
        for uri, path in common.ami_excerpts():
            done = dubber.dub_file(path, Path(tmp) / f"{uri}.wav", stop_after="transcribe", subtitles=())
            assert done.project is not None
            segments = [s for s in done.project.segments if s.transcript]
            busy += done.timings["dub"]
            total += done.duration
            rows.append(
                {
                    "uri": uri,
                    "rtf": done.timings["dub"] / done.duration,
                    "languages": sorted({s.language for s in segments if s.language}),
                    "segments": len(done.project.segments),
                    "english": sum(s.language == "en" for s in segments),
                    "refused": sum("UNSUPPORTED_LANGUAGE" in (s.error or "") for s in done.project.segments),
                    "failed": [s.error for s in done.project.segments if s.status == "failed"],
                    "text": " ".join(s.transcript or "" for s in segments),
                }
            )
    scored = [r for r in rows if references.get(r["uri"])]
    out: dict[str, Any] = {"rows": rows, "rtf": busy / total if total else None}
    if scored:
        refs = [normalize(references[r["uri"]]) for r in scored]
        hyps = [normalize(r["text"]) for r in scored]
        out["wer"] = jiwer.wer(refs, hyps)
        out["scored"] = [r["uri"] for r in scored]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument(
        "--threads", type=int, default=2, help="also time one call at a time on this many threads"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--hypotheses", type=Path, default=None, help="write the AMI transcripts of each model"
    )
    args = parser.parse_args()
    references: dict[str, str] = {}
    if REFERENCES.is_file():
        references = json.loads(REFERENCES.read_text(encoding="utf-8"))["transcripts"]
    figures: dict[str, Any] = {
        "machine": common.machine(),
        "date": datetime.date.today().isoformat(),
        "models": {},
    }
    hypotheses: dict[str, dict[str, str]] = {}
    for model in args.models.split(","):
        asr = load(model, None)
        lid = generated_lid(asr)
        asr.close()
        real = ami(model, references, None)
        fast = ami(model, {}, args.threads)
        hypotheses[model] = {r["uri"]: r["text"] for r in real["rows"]}
        generated = lid["rows"]
        correct = sum(r.get("language") == r["expected"] for r in generated)
        foreign = [r for r in generated if r["expected"] != "en"]
        refused = sum("refused" in r for r in foreign)
        english = [r for r in generated if r["expected"] == "en"]
        figures["models"][model] = {
            "generated": generated,
            "lid_accuracy_generated": correct / len(generated),
            "foreign_refused": refused / len(foreign),
            "english_refused": sum("refused" in r for r in english) / len(english),
            "ami": real,
            "lid_accuracy_ami": sum(r["languages"] == ["en"] for r in real["rows"] if r["text"])
            / max(1, sum(bool(r["text"]) for r in real["rows"])),
            "ami_pieces": sum(r["segments"] for r in real["rows"]),
            "ami_pieces_english": sum(r["english"] for r in real["rows"]),
            "ami_pieces_refused": sum(r["refused"] for r in real["rows"]),
            f"rtf_ami_{args.threads}_threads": fast["rtf"],
        }
        m = figures["models"][model]
        print(
            f"{model:8} LID generated {m['lid_accuracy_generated']:.0%}  foreign refused"
            f" {m['foreign_refused']:.0%}  English refused {m['english_refused']:.0%}  AMI pieces:"
            f" {m['ami_pieces_english']}/{m['ami_pieces']} heard as English, {m['ami_pieces_refused']}"
            f" refused, excerpts all-English {m['lid_accuracy_ami']:.0%}"
            f"  WER {real.get('wer', float('nan')):.1%}  RTF {real['rtf']:.3f}"
            f" (default threads), {fast['rtf']:.3f} ({args.threads} threads)"
        )
        for r in generated:
            heard = r.get("language", "refused")
            print(f"    {r['voice']:6} {heard} {r.get('probability') or 0:.2f}  {r.get('text', '')[:60]}")
    print(common.machine())
    common.write_json(args.json, figures)
    if args.hypotheses is not None:
        args.hypotheses.write_text(
            json.dumps(hypotheses, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
