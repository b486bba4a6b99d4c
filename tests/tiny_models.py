"""Tiny random-weight CLIP, SigLIP and CLAP models saved with save_pretrained, so that tests run the real
Hugging Face loading code offline. Their vectors mean nothing; their shapes, preprocessing and plumbing
are those of the real models."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    RobertaTokenizer,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
)


def _byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE tokenizers use for raw bytes: any text tokenizes, no merges needed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [256 + i for i in range(256 - len(printable))]
    return [chr(c) for c in printable + shifted]


def _write_bpe(folder: Path, vocab: dict[str, int]) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def _clip_tokenizer(out: Path, max_tokens: int) -> CLIPTokenizer:
    alphabet = _byte_alphabet()
    vocab = {token: i for i, token in enumerate([*alphabet, *(c + "</w>" for c in alphabet),
                                                 "<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(*_write_bpe(out / "bpe", vocab), model_max_length=max_tokens)


LAYERS = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}


def save_tiny_clip(out: Path, image_size: int = 32) -> Path:
    """A 2-layer CLIP (16-d shared space, 32 px images unless asked: 4 x 4 patches) with its processor, as a hub
    download would have it."""
    tokenizer = _clip_tokenizer(out, 77)
    config = CLIPConfig(
        text_config={**LAYERS, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={**LAYERS, "image_size": image_size, "patch_size": image_size // 4},
        projection_dim=16,
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def save_random_clip_vit_b32(out: Path) -> Path:
    """CLIP ViT-B/32's shapes (transformers' default CLIPConfig) with random weights and 224 px images: for
    speed measurements where the real weights cannot be downloaded; a forward pass costs what the real one does."""
    tokenizer = _clip_tokenizer(out, 77)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id})
    images = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def save_tiny_siglip(out: Path) -> Path:
    """A 2-layer SigLIP (32-d: no projection, the towers' width), 32 px images, text padded to 16 tokens.
    (Its tokenizer is CLIP's byte-level BPE rather than SigLIP's SentencePiece: the processor treats both alike.)"""
    tokenizer = _clip_tokenizer(out, 16)
    config = SiglipConfig(text_config={**LAYERS, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                                       "bos_token_id": None, "eos_token_id": None},
                          vision_config={**LAYERS, "image_size": 32, "patch_size": 8})
    SiglipModel(config).save_pretrained(out)
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def save_tiny_clap(out: Path) -> Path:
    """A tiny CLAP (HTSAT audio tower, RoBERTa text tower, 16-d shared space) with its processor."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *_byte_alphabet(), "<mask>"])}
    tokenizer = RobertaTokenizer(*_write_bpe(out / "bpe", vocab), model_max_length=77)
    config = ClapConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 80, "projection_dim": 16,
                     "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
        audio_config={"depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
                      "hidden_size": 32, "projection_dim": 16, "enable_fusion": False},
        projection_dim=16,
    )
    ClapModel(config).save_pretrained(out)
    features = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")  # as laion/clap-htsat-unfused
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    return out
