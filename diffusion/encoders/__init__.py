"""Text-encoder parts the families share: ComfyUI's prompt emphasis and 77-token chunks (`prompt`), CLIP
tokenizers built from the shipped merge list (`clip_tokenizer`), CLIP encoders of multi-encoder families
(`clip`) and T5 encoders read from files (`t5`). Each family's CLIP value is in its own package."""
