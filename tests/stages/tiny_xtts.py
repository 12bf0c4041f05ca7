"""A tiny XTTS v2 model with random weights, built with Coqui's own classes.

The architecture is XTTS v2's (GPT with perceiver conditioning, HiFi-GAN decoder with its
ResNet speaker encoder), only the GPT is shrunk to two 64-channel layers and the tokenizer is a
small BPE vocabulary trained here that carries XTTS's special and language tokens. The result is
saved as an ordinary XTTS model directory (``config.json``, ``model.pth`` holding
``{"model": state_dict}``, ``vocab.json``), so the synthesizer loads it through
``Xtts.load_checkpoint`` exactly as it loads the released model. It speaks noise, not words,
which is all the plugin's tests need: the real code path from text to waveform.
"""

from __future__ import annotations

from pathlib import Path

#: Languages the tiny model declares (a subset of XTTS v2's, so "ja" stays unsupported).
LANGUAGES = ("en", "de", "es", "fr")

_SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]"]
_CORPUS = (
    "hello, welcome to the game.",
    "the weather is nice today.",
    "please open the window.",
    "we will meet at the station tomorrow morning.",
    "thank you very much for your help.",
    "guten abend und willkommen zum spiel.",
    "buenas noches y bienvenidos al partido.",
    "bonsoir et bienvenue au match.",
)


def _train_vocab(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    # XTTS writes spaces as [SPACE] before encoding; splitting on whitespace keeps those
    # markers and the language tags as whole tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=160,
        special_tokens=_SPECIAL_TOKENS + [f"[{lang}]" for lang in LANGUAGES],
        # Every letter and punctuation mark the cleaners can leave, so nothing maps to [UNK].
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzäöüßáéíóúñàèçâêîôûœ0123456789.,;:!?'\"-()"),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer.save(str(path))


def build_tiny_xtts(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight XTTS v2 model directory and return it.

    Args:
        directory: Where to write ``config.json``, ``model.pth`` and ``vocab.json``.
        seed: Seed for the random weights, so every session builds the same model.
    """
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.json"
    _train_vocab(vocab)
    tokenizer = VoiceBpeTokenizer(vocab_file=vocab)
    assert tokenizer.tokenizer is not None

    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=64,
        gpt_n_heads=2,
        gpt_use_perceiver_resampler=True,  # the v2 conditioning path
        gpt_number_text_tokens=tokenizer.get_number_tokens(),
        gpt_start_text_token=tokenizer.tokenizer.token_to_id("[START]"),
        gpt_stop_text_token=tokenizer.tokenizer.token_to_id("[STOP]"),
        decoder_input_dim=64,
    )
    config = XttsConfig(model_args=args, languages=list(LANGUAGES))
    torch.manual_seed(seed)
    model = Xtts(config)
    torch.save({"model": model.state_dict()}, directory / "model.pth")
    config.save_json(str(directory / "config.json"))
    return directory
