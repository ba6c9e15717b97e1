"""Corpora, tokenizers, the token cache and batch samplers."""
