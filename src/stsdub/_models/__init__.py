"""The model cache: what a model name means, where it is kept, how it is fetched.

``_cache`` knows names and places (the Hugging Face cache, ``download_root``) and lists what
is kept; ``_downloads`` fetches Piper voices and converts Hub models for CTranslate2;
``_demucs`` fetches Demucs models; ``_cli`` is ``stsdub models``.
"""
