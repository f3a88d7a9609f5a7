"""The model: GPT-2 as OpenAI published it, its KV cache, and text generation."""
