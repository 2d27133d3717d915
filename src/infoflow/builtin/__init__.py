"""Builtin models: small Mamba-1, Mamba-2, GPT-2 and Llama models, and two hybrids (Bamba: Mamba-2 and attention;
Qwen3.5: Gated DeltaNet and attention), trained on the synthetic facts.

``models/<family>/`` holds each trained model as a transformers folder (safetensors weights, config,
tokenizer) with its ``metrics.json``; ``train.train_builtin`` retrains one reproducibly from a seed.
"""
