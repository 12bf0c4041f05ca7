"""A tiny Marian (Opus-MT architecture) translation model with random weights, built in the test.

The model is made with the real libraries from end to end: SentencePiece models are trained
on a handful of sentences, a ``MarianTokenizer`` and a ``MarianMTModel`` with tiny dimensions
are saved the way Opus-MT checkpoints are, and CTranslate2's ``TransformersConverter`` turns
the checkpoint into a CTranslate2 model directory (with ``source.spm`` and ``target.spm``
copied next to ``model.bin``, as Opus-MT conversions ship them). Its output words are
meaningless; it exercises the load → tokenize → translate → detokenize path of the stage.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

#: Sentences the SentencePiece models are trained on (the source side in English, the target
#: side in German), so that test inputs tokenize into known pieces.
SOURCE_SENTENCES = (
    "Hello, welcome to the game.",
    "Good evening.",
    "The weather is nice today.",
    "Please open the window.",
    "We will meet at the station tomorrow morning.",
    "The game starts at seven o'clock.",
    "Thank you very much for your help.",
    "The children are playing in the garden.",
    "speech 0 speech 1 speech 2 speech 3 speech 4 speech 5",
)
TARGET_SENTENCES = (
    "Hallo, willkommen zum Spiel.",
    "Guten Abend.",
    "Das Wetter ist heute schön.",
    "Bitte öffne das Fenster.",
    "Wir treffen uns morgen früh am Bahnhof.",
    "Das Spiel beginnt um sieben Uhr.",
    "Vielen Dank für deine Hilfe.",
    "Die Kinder spielen im Garten.",
)

_VOCAB_SIZE = 64


def _train_spm(sentences: tuple[str, ...], prefix: Path) -> Path:
    import sentencepiece as spm

    corpus = prefix.with_suffix(".txt")
    corpus.write_text("\n".join(sentences * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=_VOCAB_SIZE,
        model_type="unigram",
        character_coverage=1.0,
        # Marian's special tokens live in vocab.json, not in the SentencePiece models.
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def build_tiny_marian(root: Path, *, extra_tokens: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Build the tiny model under ``root``; return the CTranslate2 model directory.

    ``extra_tokens`` are added to the vocabulary as whole tokens; language tokens such as
    ``eng_Latn`` make the model look like NLLB to the stage (which finds NLLB by them).
    """
    import ctranslate2.converters
    import sentencepiece as spm
    import torch
    import transformers

    torch.manual_seed(seed)
    work = root / "work"
    checkpoint = root / "checkpoint"
    output = root / "ct2"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint.mkdir(parents=True, exist_ok=True)

    source_spm = _train_spm(SOURCE_SENTENCES, work / "source")
    target_spm = _train_spm(TARGET_SENTENCES, work / "target")

    # One vocabulary shared by encoder and decoder, as in most Opus-MT models: the special
    # tokens first, then every piece of both SentencePiece models.
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for model_file in (source_spm, target_spm):
        processor = spm.SentencePieceProcessor(model_file=str(model_file))
        for i in range(processor.get_piece_size()):
            vocab.setdefault(processor.id_to_piece(i), len(vocab))
    for token in extra_tokens:
        vocab.setdefault(token, len(vocab))
    vocab["<pad>"] = len(vocab)
    vocab_file = work / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")

    with warnings.catch_warnings():
        # MarianTokenizer recommends sacremoses for punctuation normalisation; not needed here.
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        tokenizer = transformers.MarianTokenizer(
            source_spm=str(source_spm), target_spm=str(target_spm), vocab=str(vocab_file)
        )
        tokenizer.save_pretrained(str(checkpoint))

    config = transformers.MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
        share_encoder_decoder_embeddings=True,
    )
    model = transformers.MarianMTModel(config)
    model.save_pretrained(str(checkpoint))

    converter = ctranslate2.converters.TransformersConverter(
        str(checkpoint), copy_files=["source.spm", "target.spm"]
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        converter.convert(str(output), force=True)
    return output
